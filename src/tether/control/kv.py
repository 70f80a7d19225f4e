"""Key/value configuration over the Store (Consul's /v1/kv semantics).

Documents live under `kv/<key>` as {"Value": base64 or null, "Flags": int}. Values are
capped at 512 KiB like Consul's; a larger value is refused before anything is written.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from tether.core.errors import Conflict, InvalidInput, TooLarge
from tether.store.base import Check, Delete, DeletePrefix, Entry, Put, Store

PREFIX = "kv/"
MAX_VALUE_BYTES = 512 * 1024
MAX_FLAGS = 2**64 - 1
#: A write retries this often when the pair changes under it between its read and its commit
#: (then a cas write answers false, a plain one 409).
LOCK_KEEPING_ATTEMPTS = 8


def _key(key: str) -> str:
    if key.startswith("/"):
        key = key[1:]
    return PREFIX + key


def format_pair(entry: Entry) -> dict[str, Any]:
    """The JSON element Consul returns for one pair."""
    return {
        "Key": entry.key[len(PREFIX):],
        "Value": entry.value["Value"],
        "Flags": entry.value["Flags"],
        "LockIndex": entry.value.get("LockIndex", 0),
        "Session": entry.value.get("Session", ""),
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }


def encode_value(value: bytes) -> str | None:
    """The stored form of a value: base64, or null for an empty one (as Consul answers)."""
    return base64.b64encode(value).decode() if value else None


def raw_value(entry: Entry) -> bytes:
    value = entry.value["Value"]
    return base64.b64decode(value) if value is not None else b""


class KV:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: Held by every read-then-write of KV pairs in this process (plain writes, locks, txn), so
        #: they never race each other into compare-and-set retries; other servers' writes still can.
        self.write_lock = asyncio.Lock()

    @staticmethod
    def prefix(key: str) -> str:
        """The store prefix a read of `key` depends on (for blocking queries)."""
        return _key(key)

    def get(self, key: str) -> Entry | None:
        return self.store.get(_key(key))

    def list(self, prefix: str) -> list[Entry]:
        return self.store.list(_key(prefix))

    def keys(self, prefix: str, separator: str = "") -> list[str]:
        """Keys under `prefix`; with a separator, roll deeper keys up to the next separator."""
        out: list[str] = []
        for entry in self.list(prefix):
            key = entry.key[len(PREFIX):]
            if separator:
                cut = key.find(separator, len(prefix))
                if cut != -1:
                    key = key[: cut + len(separator)]
            if not out or out[-1] != key:
                out.append(key)
        return out

    @staticmethod
    def validate(key: str, value: bytes, flags: int) -> None:
        """A write's key, value size and flags, as Consul bounds them."""
        if not key or key == "/":
            raise InvalidInput("missing key name: PUT /v1/kv/<key>")
        if len(value) > MAX_VALUE_BYTES:
            raise TooLarge(
                f"value for {key!r} is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes (512 KiB). "
                "Store large blobs elsewhere and keep a reference in KV"
            )
        if not 0 <= flags <= MAX_FLAGS:
            raise InvalidInput(f"flags must be an unsigned 64-bit integer, got {flags}")

    async def put(self, key: str, value: bytes, *, flags: int = 0, cas: int | None = None) -> bool:
        """Write a value; with `cas`, only if the key's ModifyIndex equals it (0: create only).

        A held lock stays held (Consul keeps Session and LockIndex on a plain write): the write
        is compare-and-set on the pair it read, so a lock taken meanwhile is not overwritten."""
        self.validate(key, value, flags)
        async with self.write_lock:
            return await self._put_keeping_lock(key, value, flags, cas)

    async def _put_keeping_lock(self, key: str, value: bytes, flags: int, cas: int | None) -> bool:
        for _ in range(LOCK_KEEPING_ATTEMPTS):
            current = self.store.get(_key(key))
            if cas is not None and (current.modify_index if current else 0) != cas:
                return False
            lock = {k: current.value[k] for k in ("Session", "LockIndex") if k in current.value} if current else {}
            doc = {"Value": encode_value(value), "Flags": flags, **lock}
            try:
                guard = Check(_key(key), current.modify_index if current else 0)
                await self.store.commit([Put(_key(key), doc)], [guard])
            except Conflict:
                continue
            return True
        if cas is not None:
            return False
        raise Conflict(f"key {key!r} kept changing under this write ({LOCK_KEEPING_ATTEMPTS} tries); retry it")

    async def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        if recurse and cas is not None:
            raise InvalidInput("cas cannot be combined with recurse")
        if cas is not None and cas <= 0:
            raise InvalidInput("cas for a delete must be the key's ModifyIndex (greater than 0)")
        if recurse:
            await self.store.commit([DeletePrefix(_key(key))])
            return True
        checks = [Check(_key(key), cas)] if cas is not None else []
        try:
            await self.store.commit([Delete(_key(key))], checks)
        except Conflict:
            return False
        return True
