"""Key/value configuration over the Store (Consul's /v1/kv semantics).

Documents live under `kv/<key>` as {"Value": base64 or null, "Flags": int}. Values are
capped at 512 KiB like Consul's; a larger value is refused before anything is written.
"""

from __future__ import annotations

import base64
from typing import Any

from tether.core.errors import Conflict, InvalidInput, TooLarge
from tether.store.base import Check, Delete, DeletePrefix, Entry, Put, Store

PREFIX = "kv/"
MAX_VALUE_BYTES = 512 * 1024
MAX_FLAGS = 2**64 - 1


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
        "LockIndex": 0,
        "Session": "",
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }


def raw_value(entry: Entry) -> bytes:
    value = entry.value["Value"]
    return base64.b64decode(value) if value is not None else b""


class KV:
    def __init__(self, store: Store) -> None:
        self.store = store

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

    async def put(self, key: str, value: bytes, *, flags: int = 0, cas: int | None = None) -> bool:
        """Write a value; with `cas`, only if the key's ModifyIndex equals it (0: create only)."""
        if not key or key == "/":
            raise InvalidInput("missing key name: PUT /v1/kv/<key>")
        if len(value) > MAX_VALUE_BYTES:
            raise TooLarge(
                f"value for {key!r} is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes (512 KiB). "
                "Store large blobs elsewhere and keep a reference in KV"
            )
        if not 0 <= flags <= MAX_FLAGS:
            raise InvalidInput(f"flags must be an unsigned 64-bit integer, got {flags}")
        doc = {"Value": base64.b64encode(value).decode() if value else None, "Flags": flags}
        checks = [Check(_key(key), cas)] if cas is not None else []
        try:
            await self.store.commit([Put(_key(key), doc)], checks)
        except Conflict:
            return False
        return True

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
