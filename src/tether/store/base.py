"""The Store interface: revisioned JSON documents under string keys.

Every write (a transaction of puts and deletes, optionally guarded by compare-and-set
checks) bumps one global revision. Each key remembers the revision that created it and
the one that last modified it; deletes leave a tombstone revision so that "the index of
a prefix" (the newest change under it, deletes included) never goes backwards.

Blocking queries and watches are "wake me when the index of any of my prefixes passes
N". This maps one-to-one onto etcd (mod_revision, watch from a revision, Txn with
Compare on mod_revision), which is what lets an etcd backend follow without changing
any caller.

Reads are synchronous and served from memory: every backend keeps a cache of the whole
keyspace (fed by its own writes, or by a watch for etcd), so a read costs microseconds.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union


@dataclass(frozen=True, slots=True)
class Entry:
    """One live document. `value` is JSON-compatible and must be treated as immutable."""

    key: str
    value: Any
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    prefix: str


@dataclass(frozen=True, slots=True)
class Check:
    """Compare-and-set guard: the key's modify index must equal `modify_index`.

    `modify_index=0` means "the key must not exist" (create only), as in Consul's `cas=0`.
    """

    key: str
    modify_index: int


Op = Union[Put, Delete, DeletePrefix]


class Store(abc.ABC):
    """What the control plane needs from storage. One conformance suite covers every backend."""

    #: True when several servers share this store (etcd): singleton work is then elected.
    shared = False

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The newest committed revision (0 for an empty, never-written store)."""

    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """The live entry under `key`, or None."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[Entry]:
        """Live entries whose key starts with `prefix`, sorted by key."""

    @abc.abstractmethod
    def index(self, prefixes: str | Iterable[str]) -> int:
        """Newest revision of any change (put or delete) under the prefixes; at least 1.

        This is the blocking-query index (X-Consul-Index). Consul clients treat an index
        below 1 as 1, so we never return 0.
        """

    @abc.abstractmethod
    async def commit(self, ops: Sequence[Op], checks: Sequence[Check] = ()) -> int:
        """Apply `ops` atomically if every check holds; return the new revision.

        Raises core.errors.Conflict when a check fails (nothing is written), and
        core.errors.Unavailable when the backend cannot persist (nothing is applied).
        An empty `ops` list changes nothing and returns the current revision.
        """

    @abc.abstractmethod
    async def wait(self, prefixes: str | Iterable[str], index: int, timeout: float) -> int:
        """Block until index(prefixes) differs from `index` or `timeout` seconds pass.

        Returns the current index(prefixes). Returns at once when it already differs
        (including when it went backwards, e.g. after a restore: clients then reset).
        Only changes under the given prefixes wake the waiter.
        """

    @abc.abstractmethod
    def parked(self, prefix: str = "") -> int:
        """How many `wait` calls are blocked now on a prefix that starts with `prefix`.

        For tests and diagnostics: a test of a blocking query waits until its waiter is
        parked before it writes, so it proves the write woke the waiter (a request that
        arrived after the write would return at once and prove nothing).
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release files and connections. Further calls are errors."""


async def create_once(store: Store, key: str, value: Any, *, timeout: float = 10.0) -> Entry:
    """Create `key` unless it exists (several servers may start at once: one wins), and
    return the entry every server then sees, waiting until this server's view has it."""
    from tether.core.errors import Conflict

    if store.get(key) is None:
        try:
            await store.commit([Put(key, value)], [Check(key, 0)])
        except Conflict:  # another server created it first: theirs is the one
            pass
    return await wait_present(store, key, timeout=timeout)


async def wait_present(store: Store, key: str, *, timeout: float = 10.0) -> Entry:
    """The entry under `key` once this server's view of the store has it."""
    import asyncio

    from tether.core.errors import Unavailable

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (entry := store.get(key)) is None:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Unavailable(f"{key} was written by another server but has not reached this one in {timeout:g}s")
        await store.wait(key, store.index(key), remaining)
    return entry
