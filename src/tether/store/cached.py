"""A Store that keeps the whole keyspace in memory and persists through a Backend.

The memory store is this class with a backend that persists nothing; the SQLite store
is this class with a backend that writes each transaction durably before it is applied
to memory (so an acknowledged write survives kill -9).

Writes are serialised by one lock (SQLite has one writer anyway; see DESIGN.md): the
checks are evaluated against memory, the transaction is persisted, then applied to
memory and waiters whose prefixes it touched are woken. Readers never wait on a lock.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any, Iterable, Protocol, Sequence

from tether.core.errors import Conflict, Unavailable
from tether.store.base import Check, Delete, DeletePrefix, Entry, Op, Put, Store

# Deleted keys are remembered (for exact-key and non-directory prefix indexes) up to this
# many; older tombstones are dropped. Directory indexes (`a/b/`) never lose a delete, so
# only blocking queries on a deleted key that is long gone can see an index go backwards,
# which Consul clients handle by resetting to 0.
MAX_TOMBSTONES = 10_000


class Backend(Protocol):
    """Durable storage under a CachedStore."""

    def load(self) -> tuple[int, list[tuple[str, Any, int, int]]]:
        """Return (revision, [(key, value or None for a tombstone, create, modify)])."""

    def persist(self, revision: int, puts: list[Entry], deletes: list[tuple[str, int]]) -> None:
        """Durably write one transaction. Raises on failure; then nothing may be applied."""

    def close(self) -> None: ...


class NullBackend:
    """Persists nothing: the memory store."""

    def load(self) -> tuple[int, list[tuple[str, Any, int, int]]]:
        return 0, []

    def persist(self, revision: int, puts: list[Entry], deletes: list[tuple[str, int]]) -> None:
        return None

    def close(self) -> None:
        return None


def _directories(key: str) -> Iterable[str]:
    """'a/b/c' -> '', 'a/', 'a/b/'. Directory indexes make index('a/b/') O(1)."""
    yield ""
    start = 0
    while (slash := key.find("/", start)) != -1:
        yield key[: slash + 1]
        start = slash + 1


class CachedStore(Store):
    def __init__(self, backend: Backend | None = None, *, run_backend_in_thread: bool = False) -> None:
        self._backend: Backend = backend or NullBackend()
        # fsync can take milliseconds on a slow disk; a durable backend runs in a thread so
        # the event loop (and every blocking query it serves) keeps moving meanwhile.
        self._in_thread = run_backend_in_thread
        self._entries: dict[str, Entry] = {}
        self._keys: list[str] = []  # sorted live keys
        self._tombstones: dict[str, int] = {}  # key -> revision of its deletion
        self._dir_index: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._revision, rows = self._backend.load()
        for key, value, create, modify in rows:
            if value is None:
                self._tombstones[key] = modify
            else:
                self._entries[key] = Entry(key, value, create, modify)
            for d in _directories(key):
                if self._dir_index.get(d, 0) < modify:
                    self._dir_index[d] = modify
        self._keys = sorted(self._entries)

    # -- reads -------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def list(self, prefix: str) -> list[Entry]:
        lo = bisect.bisect_left(self._keys, prefix)
        out = []
        for key in self._keys[lo:]:
            if not key.startswith(prefix):
                break
            out.append(self._entries[key])
        return out

    def index(self, prefixes: str | Iterable[str]) -> int:
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        return max((self._prefix_index(p) for p in prefixes), default=0) or 1

    def _prefix_index(self, prefix: str) -> int:
        if prefix == "" or prefix.endswith("/"):
            return self._dir_index.get(prefix, 0)
        best = self._tombstones.get(prefix, 0)
        for entry in self.list(prefix):
            best = max(best, entry.modify_index)
        for key, rev in self._tombstones.items():
            if rev > best and key.startswith(prefix):
                best = rev
        return best

    # -- writes ------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op], checks: Sequence[Check] = ()) -> int:
        self._ensure_open()
        async with self._lock:
            for check in checks:
                current = self._entries.get(check.key)
                have = current.modify_index if current else 0
                if have != check.modify_index:
                    raise Conflict(
                        f"compare-and-set failed on {check.key!r}: "
                        f"expected index {check.modify_index}, found {have}"
                    )
            revision = self._revision + 1
            puts, deletes = self._plan(ops, revision)
            if not puts and not deletes:
                return self._revision
            try:
                if self._in_thread:
                    await asyncio.to_thread(self._backend.persist, revision, puts, deletes)
                else:
                    self._backend.persist(revision, puts, deletes)
            except Exception as exc:  # the backend's own errors: disk full, locked, I/O
                raise Unavailable(f"store write failed, nothing was changed: {exc}") from exc
            self._apply(revision, puts, deletes)
            return revision

    def _plan(self, ops: Sequence[Op], revision: int) -> tuple[list[Entry], list[tuple[str, int]]]:
        """Resolve ops (later ops win) into final puts and deletes, without touching state."""
        final: dict[str, Any] = {}  # key -> value, or None for delete
        for op in ops:
            if isinstance(op, Put):
                final[op.key] = op.value
            elif isinstance(op, Delete):
                final[op.key] = None
            elif isinstance(op, DeletePrefix):
                for entry in self.list(op.prefix):
                    final[entry.key] = None
                for key in [k for k, v in final.items() if v is not None and k.startswith(op.prefix)]:
                    final[key] = None
            else:  # a programming error, not user input
                raise TypeError(f"unknown store op {op!r}")
        puts: list[Entry] = []
        deletes: list[tuple[str, int]] = []
        for key, value in final.items():
            if value is None:
                if key in self._entries:
                    deletes.append((key, revision))
            else:
                old = self._entries.get(key)
                puts.append(Entry(key, value, old.create_index if old else revision, revision))
        return puts, deletes

    def _apply(self, revision: int, puts: list[Entry], deletes: list[tuple[str, int]]) -> None:
        touched: list[str] = []
        for entry in puts:
            if entry.key not in self._entries:
                bisect.insort(self._keys, entry.key)
            self._entries[entry.key] = entry
            self._tombstones.pop(entry.key, None)
            touched.append(entry.key)
        for key, rev in deletes:
            if self._entries.pop(key, None) is not None:  # a watch may report a delete we never saw the put of
                del self._keys[bisect.bisect_left(self._keys, key)]
            self._tombstones[key] = rev
            touched.append(key)
        if len(self._tombstones) > MAX_TOMBSTONES:
            oldest = sorted(self._tombstones.items(), key=lambda kv: kv[1])
            for key, _ in oldest[: len(oldest) - MAX_TOMBSTONES]:
                del self._tombstones[key]
        changed_at = [(e.key, e.modify_index) for e in puts] + deletes
        for key, rev in changed_at:
            for d in _directories(key):
                if self._dir_index.get(d, 0) < rev:
                    self._dir_index[d] = rev
        self._revision = max(self._revision, revision)
        self._wake(touched)

    def _resync(self, revision: int, entries: list[Entry]) -> None:
        """Replace the cache with a full listing taken at `revision` (an etcd re-list).

        Keys that vanished count as deleted at `revision`, so every prefix index still only
        moves forward and waiters on a changed prefix wake."""
        fresh = {e.key: e for e in entries}
        puts = [e for e in entries if self._entries.get(e.key) != e]
        deletes = [(key, revision) for key in self._entries if key not in fresh]
        self._apply(revision, puts, deletes)

    def _wake(self, keys: list[str]) -> None:
        if not self._waiters:
            return
        for key in keys:
            # Every string prefix of a changed key may be a waiter's prefix: a dict lookup
            # each, so the cost is independent of the number of waiters.
            for i in range(len(key) + 1):
                futures = self._waiters.get(key[:i])
                if futures:
                    for fut in futures:
                        if not fut.done():
                            fut.set_result(None)

    # -- blocking ----------------------------------------------------------------------

    async def wait(self, prefixes: str | Iterable[str], index: int, timeout: float) -> int:
        self._ensure_open()
        prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
        current = self.index(prefixes)
        if current != index or timeout <= 0:
            return current
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while current == index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            fut: asyncio.Future[None] = loop.create_future()
            for p in prefixes:
                self._waiters.setdefault(p, set()).add(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                for p in prefixes:
                    waiters = self._waiters.get(p)
                    if waiters is not None:
                        waiters.discard(fut)
                        if not waiters:
                            del self._waiters[p]
            current = self.index(prefixes)
        return current

    def parked(self, prefix: str = "") -> int:
        return len({fut for p, futures in self._waiters.items() if p.startswith(prefix) for fut in futures
                    if not fut.done()})

    async def close(self) -> None:
        if self._closed:
            return
        async with self._lock:
            self._closed = True
            self._backend.close()
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)

    def _ensure_open(self) -> None:
        if self._closed:
            raise Unavailable("the store is closed")


class MemoryStore(CachedStore):
    """Everything in memory; lost when the process exits (the dev agent without -data-dir)."""

    def __init__(self) -> None:
        super().__init__(NullBackend())
