"""Singleton work (node and health reaping, expired-token reaping, CA root pruning) runs
on the elected server only, and every write it makes is fenced.

On a store of its own (SQLite, memory) a server is always the leader. On a shared store
(etcd) the leader is elected (store/etcd_election.py); `FencedStore` is the store as the
singleton work sees it: reads as usual, and every commit carries the leader's fence, so
a server that lost the lease (even one paused mid-way that has not noticed yet) cannot
write: etcd refuses it (Conflict), and nothing is changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable, Protocol, Sequence

from tether.core.errors import Conflict
from tether.store.base import Check, Entry, Op, Store

log = logging.getLogger("tether.server.leader")


class Leadership(Protocol):
    shared: bool
    changed: asyncio.Event

    @property
    def is_leader(self) -> bool: ...
    def fence(self) -> list[Check]: ...
    def leader_id(self) -> str | None: ...
    def servers(self) -> dict[str, str]: ...
    async def start(self) -> None: ...
    async def announce(self, address: str) -> None: ...
    async def stop(self) -> None: ...


class SoleLeader:
    """One server on its own store: always the leader, nothing to fence."""

    shared = False
    is_leader = True
    server_id = "self"

    def __init__(self) -> None:
        self.changed = asyncio.Event()  # never set: leadership never changes
        self.address = ""

    def fence(self) -> list[Check]:
        return []

    def leader_id(self) -> str | None:
        return self.server_id

    def servers(self) -> dict[str, str]:
        return {self.server_id: self.address}

    async def start(self) -> None:
        return None

    async def announce(self, address: str) -> None:
        self.address = address

    async def stop(self) -> None:
        return None


def leadership_for(store: Store, server_id: str, ttl: int) -> Leadership:
    if not store.shared:
        return SoleLeader()
    from tether.store.etcd_election import EtcdElection  # grpc: loaded only for an etcd store

    return EtcdElection(store, server_id, ttl=ttl)  # type: ignore[arg-type]


class NotLeader(Conflict):
    """A leader-only write from a server that is not (or no longer) the leader."""


class FencedStore(Store):
    """`store` for the singleton work: every commit is leader-only."""

    def __init__(self, store: Store, leadership: Leadership) -> None:
        self._store, self._leadership = store, leadership
        self.shared = store.shared

    @property
    def revision(self) -> int:
        return self._store.revision

    def get(self, key: str) -> Entry | None:
        return self._store.get(key)

    def list(self, prefix: str) -> list[Entry]:
        return self._store.list(prefix)

    def index(self, prefixes: str | Iterable[str]) -> int:
        return self._store.index(prefixes)

    async def commit(self, ops: Sequence[Op], checks: Sequence[Check] = ()) -> int:
        if not self._leadership.is_leader:
            raise NotLeader("this server is not the leader: singleton work is done by the elected server")
        fence = self._leadership.fence()
        try:
            return await self._store.commit(ops, [*checks, *fence])
        except Conflict as exc:
            if fence and any(self._store.get(c.key) is None or self._store.get(c.key).modify_index != c.modify_index
                             for c in fence):
                raise NotLeader(f"the leader lease was lost; the write was refused ({exc})") from None
            raise

    async def wait(self, prefixes: str | Iterable[str], index: int, timeout: float) -> int:
        return await self._store.wait(prefixes, index, timeout)

    def parked(self, prefix: str = "") -> int:
        return self._store.parked(prefix)

    async def close(self) -> None:
        return None  # the store belongs to the control plane


async def while_leader(leadership: Leadership, work: Callable[[], Awaitable[Any]], name: str) -> None:
    """Run `work` whenever this server is the leader; cancel it the moment it is not."""
    while True:
        if not leadership.is_leader:
            await leadership.changed.wait()
            continue
        changed = leadership.changed
        task = asyncio.create_task(work(), name=name)
        waiter = asyncio.create_task(changed.wait())
        try:
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
            results = await asyncio.gather(task, return_exceptions=True)
        if isinstance(results[0], Exception) and not isinstance(results[0], asyncio.CancelledError):
            log.error("%s failed: %r; restarting it", name, results[0])
            await asyncio.sleep(1.0)
