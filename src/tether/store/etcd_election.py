"""Which server does the singleton work: an etcd lease and one leader key, with fencing.

Every server holds one lease (TTL `ttl`, kept alive every ttl/3) and campaigns by
creating `leader/singleton` under the store prefix with that lease, only if the key does
not exist (etcd `create_revision == 0`). The winner is the leader until its lease ends:
it stops keeping it alive (crash, pause, partition), it revokes it (a clean stop), or etcd
expires it. Then etcd deletes the key, every server's watch-fed cache sees the delete,
and the others campaign again: a new leader within about one TTL.

Fencing: the leader key is written once and never modified while held, so its
modify_index is the leader's term. Every leader-only write carries
Check("leader/singleton", term) (see control/singleton.py): after the lease is lost the key
is gone or another server's, and etcd refuses the write, even from a leader that was
paused between deciding and writing and has not noticed yet. Locally, a leader also steps
down when no keepalive succeeded for ttl minus a margin.

The same lease carries `servers/<id>` (this server's HTTP address): the live server set
for /v1/status/peers, which vanishes with a dead server's lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import grpc
from aetcd import rpc

from tether.core.errors import TetherError
from tether.store.base import Check
from tether.store.etcd import EtcdStore
from tether.store.etcd_conn import HASLEADER

log = logging.getLogger("tether.server.leader")

LEADER_KEY = "leader/singleton"
SERVERS = "servers/"
_CREATE, _EQUAL = rpc.Compare.CompareTarget.CREATE, rpc.Compare.CompareResult.EQUAL


class EtcdElection:
    shared = True  # several servers: heartbeats go through the store so the leader sees them all

    def __init__(self, store: EtcdStore, server_id: str, *, ttl: int = 10) -> None:
        self.store, self.conn = store, store.conn
        self.server_id = server_id
        self.ttl = max(1, int(ttl))
        self.address = ""
        self.term = 0  # the leader key's modify_index while we hold it
        self._lease = 0
        self._last_renewed = 0.0
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set (and replaced) whenever leadership changes here

    @property
    def is_leader(self) -> bool:
        return self.term != 0

    def fence(self) -> list[Check]:
        """The compare that makes a write leader-only: the key still carries our term."""
        return [Check(LEADER_KEY, self.term or -1)]  # -1: never matches; not leader, no write

    def leader_id(self) -> str | None:
        entry = self.store.get(LEADER_KEY)
        return entry.value.get("ID") if entry else None

    def servers(self) -> dict[str, str]:
        """Live servers (their lease holds): id -> HTTP address."""
        return {e.key[len(SERVERS):]: e.value.get("Address", "") for e in self.store.list(SERVERS)}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def announce(self, address: str) -> None:
        """Publish this server's HTTP address under its lease (peers, leader address)."""
        self.address = address
        if self._lease:
            await self._put_self()

    async def _put_self(self) -> None:
        await self.conn.call(self.conn.kv.Put, rpc.PutRequest(
            key=self.store._key(SERVERS + self.server_id), lease=self._lease,
            value=json.dumps({"ID": self.server_id, "Address": self.address}).encode()), budget=3.0)

    def _set_term(self, term: int) -> None:
        if term != self.term:
            log.warning("this server %s the singleton work (term %d)", "now does" if term else "no longer does",
                        term or self.term)
            self.term = term
            self.changed.set()
            self.changed = asyncio.Event()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                grant = await self.conn.call(self.conn.lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=self.ttl),
                                             budget=3.0)
                self._lease, self._last_renewed = grant.ID, loop.time()
                if self.address:
                    await self._put_self()
                keepalive = asyncio.create_task(self._keep_alive(), name="leader-lease-keepalive")
                try:
                    await self._campaign(keepalive)
                finally:
                    keepalive.cancel()
                    await asyncio.gather(keepalive, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except (TetherError, grpc.aio.AioRpcError) as exc:
                log.warning("leader election: %s; retrying", exc)
            self._set_term(0)
            self._lease = 0
            await asyncio.sleep(min(1.0, self.ttl / 3))

    async def _keep_alive(self) -> None:
        """Renew the lease every ttl/3; return when it is gone (expired) or too long unrenewed."""
        loop = asyncio.get_running_loop()
        margin = min(1.0, self.ttl / 4)
        while True:
            await asyncio.sleep(self.ttl / 3)
            if loop.time() - self._last_renewed > self.ttl - margin:
                log.warning("leader lease %x not renewed for %.1fs; stepping down", self._lease,
                            loop.time() - self._last_renewed)
                return
            call = self.conn.lease.LeaseKeepAlive(timeout=max(0.5, self.ttl / 3), metadata=HASLEADER)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=self._lease))
                resp = await call.read()
            except grpc.aio.AioRpcError as exc:
                self.conn.note_error(exc)
                continue  # another member will answer next time, or the margin check ends it
            finally:
                call.cancel()
            if resp is grpc.aio.EOF:
                continue
            if resp.TTL <= 0:
                log.warning("leader lease %x expired", self._lease)
                return
            self._last_renewed = loop.time()

    async def _campaign(self, keepalive: asyncio.Task[None]) -> None:
        key = self.store._key(LEADER_KEY)
        value = json.dumps({"ID": self.server_id}).encode()
        while not keepalive.done():
            resp = await self.conn.call(self.conn.kv.Txn, rpc.TxnRequest(
                compare=[rpc.Compare(key=key, target=_CREATE, result=_EQUAL, create_revision=0)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=self._lease))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))]), budget=3.0)
            if resp.succeeded:
                term = resp.header.revision
            else:
                kvs = resp.responses[0].response_range.kvs
                term = kvs[0].mod_revision if kvs and kvs[0].lease == self._lease else 0
            if term:
                await self.store.until_revision(term, asyncio.get_running_loop().time() + self.ttl)
                self._set_term(term)
            # Wait until the leader key changes (deleted when its lease ends) or our lease ends.
            while not keepalive.done():
                entry = self.store.get(LEADER_KEY)
                if self.term and (entry is None or entry.modify_index != self.term):
                    self._set_term(0)  # someone else's now, or gone: lost
                if not self.term and entry is None:
                    break  # vacant: campaign
                wait = asyncio.create_task(self.store.wait(LEADER_KEY, self.store.index(LEADER_KEY), self.ttl))
                await asyncio.wait([wait, keepalive], return_when=asyncio.FIRST_COMPLETED)
                wait.cancel()
        self._set_term(0)

    async def stop(self) -> None:
        """Hand over at once: revoking the lease deletes the leader key and our servers/ entry."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        lease, self._lease = self._lease, 0
        self._set_term(0)
        if lease:
            try:
                await self.conn.call(self.conn.lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease), budget=1.0)
            except TetherError as exc:  # it expires by itself within its TTL
                log.warning("could not revoke the leader lease: %s", exc)
