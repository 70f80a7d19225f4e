"""Sessions over the Store, and the KV lock writes (`?acquire=`, `?release=`) that use them.

Documents: `sessions/<id>` (core/session.py's format_session), and the KV pair's own
`Session` and `LockIndex` fields. Every write is compare-and-set on what it read (the
pair and the session), so two servers on one store, or two requests at once, never both
take a lock, and a lock is never taken for a session destroyed meanwhile.

What lives in memory only, as in Consul (its leader keeps them): TTL timers (a session's
TTL restarts when a server starts, so a restart never expires a session early) and
lock-delay windows. A sweeper invalidates sessions whose node or checks fail (it wakes on
every catalog change) or whose TTL passed; an invalidation is one transaction: the
session document goes, and the keys it held are released or deleted (its Behavior).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Callable

from tether.control.catalog import CHECKS, NODE_CHECKS, NODES, Catalog
from tether.control.kv import PREFIX as KV_PREFIX, encode_value
from tether.core.errors import Conflict, InvalidInput, NotFound, TetherError
from tether.core.session import (
    SessionSpec, check_problem, decide_acquire, decide_release, format_session, session_checks, ttl_deadline,
)
from tether.store.base import Check, Delete, Entry, Op, Put, Store

log = logging.getLogger("tether.sessions")

SESSIONS = "sessions/"
#: How often a contended compare-and-set write is tried before it answers `false`.
CAS_ATTEMPTS = 8
#: The sweeper's longest sleep when no TTL is due (catalog changes wake it earlier).
SWEEP_IDLE = 30.0


class SessionService:
    def __init__(self, store: Store, catalog: Catalog, kv_writes: asyncio.Lock,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`kv_writes`: the KV's write lock (control/kv.py), held by every read-then-write of pairs."""
        self.store, self.catalog, self.clock, self._kv_writes = store, catalog, clock, kv_writes
        self._renewed: dict[str, float] = {}
        self._delayed: dict[str, float] = {}  # KV key -> end of its lock-delay window
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="session-sweeper")

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    # -- sessions ------------------------------------------------------------------------

    def get(self, session_id: str) -> Entry | None:
        return self.store.get(SESSIONS + session_id) if session_id and "/" not in session_id else None

    def list(self, node: str | None = None) -> list[dict[str, Any]]:
        found = [_with_indexes(e) for e in self.store.list(SESSIONS)]
        return [s for s in found if node is None or s["Node"] == node]

    async def create(self, spec: SessionSpec) -> str:
        """Store a new session if its node exists and none of its checks is critical."""
        problem = check_problem(_session_spec_checks(spec), self._statuses(spec.node),
                                self.catalog.node(spec.node) is not None, spec.node)
        if problem:
            raise InvalidInput(problem)
        session_id = str(uuid.uuid4())
        await self.store.commit([Put(SESSIONS + session_id, format_session(session_id, spec))],
                                [Check(SESSIONS + session_id, 0)])
        self._renewed[session_id] = self.clock()
        self._wake.set()
        return session_id

    async def renew(self, session_id: str) -> dict[str, Any]:
        entry = self.get(session_id)
        if entry is None:
            raise NotFound(f"Session id '{session_id}' not found")
        self._renewed[session_id] = self.clock()
        return _with_indexes(entry)

    async def destroy(self, session_id: str) -> None:
        """Explicit destruction invalidates, as in Consul: its keys are released (or deleted) and delayed."""
        if self.get(session_id) is None:
            return  # Consul answers true for an unknown session too
        await self._invalidate(session_id, "destroyed")

    # -- KV locks ------------------------------------------------------------------------

    def delayed(self, store_key: str) -> bool:
        """True while the key is in the lock-delay window of a session invalidated holding it."""
        return self._delayed.get(store_key, 0.0) > self.clock()

    async def kv_lock(self, key: str, value: bytes, flags: int, session_id: str, *, acquire: bool,
                      cas: int | None = None) -> bool:
        """`PUT /v1/kv/<key>?acquire=<session>` (acquire) or `?release=<session>`: true when done."""
        async with self._kv_writes:
            return await self._kv_lock(key, value, flags, session_id, acquire, cas)

    async def _kv_lock(self, key: str, value: bytes, flags: int, session_id: str, acquire: bool,
                       cas: int | None) -> bool:
        session = self.get(session_id)
        if session is None:
            raise InvalidInput(f'invalid session "{session_id}"')
        store_key = KV_PREFIX + key.lstrip("/")
        new_value = {"Value": encode_value(value), "Flags": flags}
        for _ in range(CAS_ATTEMPTS):
            current = self.store.get(store_key)
            if cas is not None and (current.modify_index if current else 0) != cas:
                return False
            if acquire:
                outcome = decide_acquire(current.value if current else None, new_value, session_id,
                                         self.delayed(store_key))
            else:
                outcome = decide_release(current.value if current else None, new_value, session_id)
            if outcome.doc is None:
                return outcome.ok
            checks = [Check(store_key, current.modify_index if current else 0),
                      Check(SESSIONS + session_id, session.modify_index)]
            try:
                await self.store.commit([Put(store_key, outcome.doc)], checks)
                return True
            except Conflict:
                session = self.get(session_id)
                if session is None:
                    raise InvalidInput(f'invalid session "{session_id}"') from None
        return False

    # -- invalidation --------------------------------------------------------------------

    def _statuses(self, node: str) -> dict[str, str]:
        return {c["CheckID"]: c["Status"] for c in self.catalog.node_checks(node)}

    def invalid(self) -> list[tuple[str, str]]:
        """(session ID, why) for every session that must go now."""
        out = []
        now = self.clock()
        for session in self.list():
            problem = check_problem(session_checks(session), self._statuses(session["Node"]),
                                    self.catalog.node(session["Node"]) is not None, session["Node"])
            deadline = ttl_deadline(session, self._renewed.setdefault(session["ID"], now))
            if problem is None and deadline is not None and deadline <= now:
                problem = f"TTL {session['TTL']} passed twice without a renewal"
            if problem:
                out.append((session["ID"], problem))
        return out

    async def _invalidate(self, session_id: str, why: str) -> None:
        async with self._kv_writes:
            await self._release_all(session_id, why)

    async def _release_all(self, session_id: str, why: str) -> None:
        for _ in range(CAS_ATTEMPTS):
            entry = self.get(session_id)
            if entry is None:
                return
            ops: list[Op] = [Delete(entry.key)]
            checks = [Check(entry.key, entry.modify_index)]
            held = [e for e in self.store.list(KV_PREFIX) if e.value.get("Session") == session_id]
            for pair in held:
                checks.append(Check(pair.key, pair.modify_index))
                if entry.value["Behavior"] == "delete":
                    ops.append(Delete(pair.key))
                else:
                    ops.append(Put(pair.key, {**pair.value, "Session": ""}))
            try:
                await self.store.commit(ops, checks)
            except Conflict:
                continue
            until = self.clock() + entry.value["LockDelay"] / 1e9
            for pair in held:
                self._delayed[pair.key] = max(self._delayed.get(pair.key, 0.0), until)
            self._renewed.pop(session_id, None)
            log.info("session %s invalidated (%s); %d key(s) %s", session_id, why, len(held),
                     "deleted" if entry.value["Behavior"] == "delete" else "released")
            return

    async def sweep(self) -> None:
        for session_id, why in self.invalid():
            await self._invalidate(session_id, why)
        now = self.clock()
        self._delayed = {k: t for k, t in self._delayed.items() if t > now}

    def _next_deadline(self) -> float:
        now = self.clock()
        deadlines = [d for s in self.list() if (d := ttl_deadline(s, self._renewed.get(s["ID"], now))) is not None]
        return max(0.05, min(deadlines, default=now + SWEEP_IDLE) - now)

    async def _sweep_loop(self) -> None:
        index = self.store.index([NODES, NODE_CHECKS, CHECKS, SESSIONS])
        while True:
            try:
                await self.sweep()
            except TetherError as exc:  # retried at the next change or deadline
                log.warning("session sweep failed: %s", exc)
            wake = asyncio.create_task(self._wake.wait())
            change = asyncio.create_task(self.store.wait([NODES, NODE_CHECKS, CHECKS], index,
                                                         min(self._next_deadline(), SWEEP_IDLE)))
            try:
                await asyncio.wait({wake, change}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the sweeper itself is cancelled: no waiter outlives it
                for task in (wake, change):
                    task.cancel()
                await asyncio.gather(wake, change, return_exceptions=True)
            self._wake.clear()
            if change.done() and not change.cancelled() and change.exception() is None:
                index = change.result()


def _session_spec_checks(spec: SessionSpec) -> list[str]:
    return list(spec.node_checks) + list(spec.service_checks)


def _with_indexes(entry: Entry) -> dict[str, Any]:
    return {**entry.value, "CreateIndex": entry.create_index, "ModifyIndex": entry.modify_index}
