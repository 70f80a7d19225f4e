"""The etcd Store: writes are etcd transactions, reads and blocking queries a watch-fed cache.

Every Tether key K lives at etcd key `<prefix>K` with a JSON value; the store index is
etcd's revision (CreateIndex = create_revision, ModifyIndex = mod_revision), so several
`tether server` processes on one etcd agree on every index without talking to each other.

- Reads: the in-memory cache of CachedStore, filled by one paginated list of the prefix
  at a pinned revision, then kept current by one watch from the last seen revision + 1.
  A broken watch (a member died) resumes from there on the next member; a watch whose
  revision was compacted away re-lists and replaces the cache (keys that vanished count
  as deleted at the list revision, so no index goes backwards and waiters wake).
- Writes: one Txn per commit. Compare-and-set checks become `mod_revision == N` compares
  evaluated by etcd itself (so two servers racing on one key cannot both win). A
  DeletePrefix whose prefix also receives a Put in the same commit is expanded from the
  cache and guarded by "nothing under the prefix changed since the cache's revision";
  if that guard fails, the cache catches up and the commit is planned again.
  A commit returns once this server's cache has seen its revision: read-your-writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Sequence

import grpc
from aetcd import rpc

from tether.core.errors import Conflict, TooLarge, Unavailable
from tether.core.etcd_target import EtcdTarget
from tether.store.base import Check, Delete, DeletePrefix, Entry, Op, Put
from tether.store.cached import CachedStore
from tether.store.etcd_conn import HASLEADER, EtcdConn, range_end

log = logging.getLogger("tether.store.etcd")

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
LIST_PAGE = 500
_DELETE = object()
_EQUAL, _LESS = rpc.Compare.CompareResult.EQUAL, rpc.Compare.CompareResult.LESS
_MOD = rpc.Compare.CompareTarget.MOD
_PUT_EVENT = rpc.Event.EventType.PUT


class _Compacted(Exception):
    pass


class EtcdStore(CachedStore):
    shared = True
    def __init__(self, target: EtcdTarget, *, rpc_timeout: float = 1.0, write_budget: float = 3.0) -> None:
        super().__init__()
        self.target = target
        self.conn = EtcdConn(target, rpc_timeout=rpc_timeout)
        #: How long a write may retry through a member failure or an election before it is a 503.
        self.write_budget = write_budget
        self._prefix = target.prefix.encode()
        self._end = range_end(self._prefix)
        self._progress = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_call: Any = None
        #: True while the watch is established (the cache follows etcd), for diagnostics.
        self.watching = False
        #: How many times the cache was rebuilt from a full list (a compacted watch revision).
        self.relists = 0

    @property
    def known_leader(self) -> bool:
        """False while etcd reports no leader: X-Consul-KnownLeader tells the truth."""
        return self.conn.known_leader

    async def open(self, *, give_up_after: float | None = None) -> "EtcdStore":
        """Connect, list the prefix and start the watch. An unreachable etcd is retried with
        back-off (each failure logged, naming the endpoints) until `give_up_after` seconds."""
        await self.conn.open()
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after is None else loop.time() + give_up_after
        pause = 0.2
        while True:
            try:
                # each attempt short: the log then shows the retries and their back-off
                budget = 1.0 if deadline is None else max(0.05, min(1.0, deadline - loop.time()))
                revision, entries = await self._list_all(budget)
                break
            except Unavailable as exc:
                if deadline is not None and loop.time() + pause > deadline:
                    await self.conn.close()
                    raise Unavailable(f"cannot start on the store: {exc}") from None
                log.warning("store: %s; retrying in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        self._resync(revision, entries)
        self._watch_task = asyncio.create_task(self._watch_forever(), name="etcd-watch")
        return self

    # -- the cache ---------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    def _entry(self, kv: Any) -> Entry | None:
        try:
            value = json.loads(kv.value)
        except ValueError:  # written by something else under our prefix: not ours to serve
            log.warning("store: etcd key %r is not JSON; ignored", kv.key)
            return None
        return Entry(kv.key[len(self._prefix):].decode(), value, kv.create_revision, kv.mod_revision)

    async def _list_all(self, budget: float | None = None) -> tuple[int, list[Entry]]:
        """Every document under the prefix, paged, all pages at one pinned revision."""
        entries: list[Entry] = []
        start, revision = self._prefix, 0
        while True:
            resp = await self.conn.call(self.conn.kv.Range, rpc.RangeRequest(
                key=start, range_end=self._end, limit=LIST_PAGE, revision=revision), budget=budget or self.write_budget)
            revision = revision or resp.header.revision
            entries.extend(e for e in map(self._entry, resp.kvs) if e is not None)
            if not resp.more or not resp.kvs:
                return revision, entries
            start = resp.kvs[-1].key + b"\0"

    def _apply(self, revision: int, puts: list[Entry], deletes: list[tuple[str, int]]) -> None:
        super()._apply(revision, puts, deletes)
        self._progress.set()
        self._progress = asyncio.Event()

    async def _watch_forever(self) -> None:
        pause = 0.05
        while not self._closed:
            try:
                await self._watch_once()
            except _Compacted as exc:
                log.warning("store: etcd compacted past revision %d (%s); re-listing", self._revision + 1, exc)
                try:
                    self._resync(*await self._list_all())
                    self.relists += 1
                    pause = 0.05
                    continue
                except Unavailable as err:
                    log.warning("store: re-list failed: %s", err)
            except grpc.aio.AioRpcError as exc:
                self.conn.note_error(exc)
                log.warning("store: etcd watch broke (%s); resuming from revision %d", exc.details(),
                            self._revision + 1)
            except ConnectionError as exc:
                log.warning("store: etcd watch broke (%s); resuming from revision %d", exc, self._revision + 1)
            self.watching = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _watch_once(self) -> None:
        call = self.conn.watch.Watch(metadata=HASLEADER)
        self._watch_call = call
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=self._prefix, range_end=self._end, start_revision=self._revision + 1)))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise ConnectionError("the watch stream ended")
                if resp.compact_revision:
                    raise _Compacted(f"oldest kept revision {resp.compact_revision}")
                if resp.canceled:
                    if "no leader" in resp.cancel_reason:
                        self.conn.known_leader = False
                    raise ConnectionError(f"etcd canceled the watch: {resp.cancel_reason or 'no reason given'}")
                self.conn.touch()
                if resp.created:
                    self.watching = True
                    self.conn.known_leader = True  # a hasleader watch is created only where a leader is
                elif not resp.events and resp.header.revision > self._revision:
                    # a progress notification: every event up to this revision has been delivered
                    self._revision = resp.header.revision
                    self._progress.set()
                    self._progress = asyncio.Event()
                self._apply_events(resp.events)
        finally:
            self._watch_call = None
            call.cancel()

    def _apply_events(self, events: Sequence[Any]) -> None:
        """Apply a response's events, one revision at a time (a response never splits a revision)."""
        i = 0
        while i < len(events):
            revision = events[i].kv.mod_revision
            puts: list[Entry] = []
            deletes: list[tuple[str, int]] = []
            while i < len(events) and events[i].kv.mod_revision == revision:
                ev = events[i]
                if ev.type == _PUT_EVENT:
                    entry = self._entry(ev.kv)
                    if entry is not None:
                        puts.append(entry)
                else:
                    deletes.append((ev.kv.key[len(self._prefix):].decode(), revision))
                i += 1
            self._apply(revision, puts, deletes)

    async def until_revision(self, revision: int, deadline: float) -> None:
        """Wait until the cache has seen `revision` (read-your-writes)."""
        loop = asyncio.get_running_loop()
        while self._revision < revision:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                raise Unavailable(f"the write was committed at index {revision}, but this server's view of "
                                  f"etcd at {self.target.describe()} has not caught up (at {self._revision})")
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def sync(self) -> None:
        """`?consistent`: learn etcd's current revision with a quorum read, then wait until
        this server's view has caught up with it (Kubernetes' consistent reads from cache)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_budget
        resp = await self.conn.call(self.conn.kv.Range, rpc.RangeRequest(
            key=self._prefix, range_end=self._end, count_only=True), budget=self.write_budget)
        target = resp.header.revision
        if self._revision >= target:
            return
        if self._watch_call is not None:  # etcd then reports progress even when our prefix is idle
            await self._watch_call.write(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
        await self.until_revision(target, deadline)

    # -- writes ------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op], checks: Sequence[Check] = ()) -> int:
        self._ensure_open()
        if not ops:
            return self._revision
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_budget
        while True:
            puts, deletes, ranges, guards = self._plan_txn(ops)
            success = [rpc.RequestOp(request_put=rpc.PutRequest(key=self._key(k), value=_encode(v)))
                       for k, v in puts.items()]
            success += [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(k)))
                        for k in deletes]
            success += [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=self._key(p), range_end=range_end(self._key(p)))) for p in ranges]
            if len(success) > MAX_TXN_OPS:
                raise TooLarge(f"one write of {len(success)} operations exceeds etcd's {MAX_TXN_OPS} per transaction")
            base = self._revision
            compare = [rpc.Compare(key=self._key(c.key), target=_MOD, result=_EQUAL, mod_revision=c.modify_index)
                       for c in checks]
            compare += [rpc.Compare(key=self._key(p), range_end=range_end(self._key(p)), target=_MOD, result=_LESS,
                                    mod_revision=base + 1) for p in guards]
            failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key(c.key), keys_only=True))
                       for c in checks]
            failure += [rpc.RequestOp(request_range=rpc.RangeRequest(
                key=self._key(p), range_end=range_end(self._key(p)), keys_only=True, limit=1,
                sort_order=rpc.RangeRequest.SortOrder.DESCEND, sort_target=rpc.RangeRequest.SortTarget.MOD))
                for p in guards]
            resp = await self.conn.call(self.conn.kv.Txn, rpc.TxnRequest(
                compare=compare, success=success, failure=failure), budget=max(0.05, deadline - loop.time()),
                write=True)
            if resp.succeeded:
                deleted = sum(r.response_delete_range.deleted for r in resp.responses if r.HasField(
                    "response_delete_range"))
                if not puts and not deleted:
                    return self._revision  # nothing changed, no new revision
                await self.until_revision(resp.header.revision, deadline + 2.0)
                return resp.header.revision
            for check, r in zip(checks, resp.responses):
                kvs = r.response_range.kvs
                have = kvs[0].mod_revision if kvs else 0
                if have != check.modify_index:
                    raise Conflict(f"compare-and-set failed on {check.key!r}: "
                                   f"expected index {check.modify_index}, found {have}")
            # A guarded prefix changed after our cache's revision: catch up, plan again.
            newest = max((r.response_range.kvs[0].mod_revision for r in resp.responses[len(checks):]
                          if r.response_range.kvs), default=base)
            await self.until_revision(newest, deadline)

    def _plan_txn(self, ops: Sequence[Op]) -> tuple[dict[str, Any], list[str], list[str], list[str]]:
        """Resolve ops (later ops win; etcd refuses a key twice in one txn) into
        (puts, single-key deletes, range-deleted prefixes, guarded prefixes)."""
        final: dict[str, Any] = {}
        prefixes: list[str] = []
        for op in ops:
            if isinstance(op, Put):
                final[op.key] = op.value
            elif isinstance(op, Delete):
                final[op.key] = _DELETE
            elif isinstance(op, DeletePrefix):
                prefixes.append(op.prefix)
                for entry in self.list(op.prefix):
                    final[entry.key] = _DELETE
                for key in [k for k in final if k.startswith(op.prefix)]:
                    final[key] = _DELETE
            else:  # a programming error, not user input
                raise TypeError(f"unknown store op {op!r}")
        puts = {k: v for k, v in final.items() if v is not _DELETE}
        ranges: list[str] = []
        guards: list[str] = []
        for p in sorted(set(prefixes)):
            if any(k.startswith(p) for k in puts):
                guards.append(p)  # expanded from the cache: guard against keys it has not seen
            elif not any(p.startswith(r) for r in ranges):
                ranges.append(p)
        deletes = [k for k, v in final.items() if v is _DELETE and not any(k.startswith(r) for r in ranges)]
        return puts, deletes, ranges, guards

    async def close(self) -> None:
        if self._closed:
            return
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        await super().close()
        await self.conn.close()


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def open_etcd_store(url_or_target: str | EtcdTarget, *, give_up_after: float | None = None,
                          **kwargs: Any) -> EtcdStore:
    from tether.core.etcd_target import parse_etcd_url

    target = parse_etcd_url(url_or_target) if isinstance(url_or_target, str) else url_or_target
    return await EtcdStore(target, **kwargs).open(give_up_after=give_up_after)
