"""The control plane: catalog, KV, CA, intentions and policy, the egress registry, over one Store.

`tether server` runs one of these behind the HTTP API; `tether agent -dev` runs one in
the same process as the agent. Node liveness works without gossip: each agent sends a
heartbeat, and a reaper marks the node's serfHealth check critical when heartbeats stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tether.control.acl import ACLService, AclConfig
from tether.control.ca import CAService
from tether.control.catalog import NODE_CHECKS, NODES, Catalog
from tether.control.egress import EgressService
from tether.control.intentions import IntentionService
from tether.control.kv import KV
from tether.control.sessions import SessionService
from tether.control.singleton import FencedStore, NotLeader, leadership_for, while_leader
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS
from tether.core.errors import TetherError
from tether.core.health import CRITICAL, NODE_CHECK_ID, PASSING
from tether.store.base import Delete, Put, Store, create_once

log = logging.getLogger("tether.server")

# An agent heartbeats every HEARTBEAT_INTERVAL; missing NODE_TTL of them marks it dead.
HEARTBEAT_INTERVAL = 10.0
NODE_TTL = 30.0
META_CLUSTER = "meta/cluster"
HEARTBEATS = "heartbeat/"  # shared stores only: node -> the last heartbeat, whichever server got it


@dataclass
class ServerConfig:
    datacenter: str = "dc1"
    node_ttl: float = NODE_TTL
    #: The mesh default intention from -default-policy (None: keep the stored one).
    default_intention: str | None = None
    #: The default intention a new store starts with: `tether server` deny, dev agent allow.
    initial_default_intention: str = "allow"
    #: Floor for LeafCertTTL. Lowered only by tests (seconds-long leaves to exercise renewal).
    ca_min_leaf_ttl: float = MIN_LEAF_TTL_SECONDS
    #: The `acl` block of the configuration (tokens, policies and the default policy).
    acl: AclConfig = field(default_factory=AclConfig)
    #: Where a bootstrap-reset file is looked for (None: no data directory).
    data_dir: Path | None = None
    #: Servers sharing an etcd store elect the one that does the singleton work with a lease
    #: of this many seconds: a dead leader is replaced within about that long.
    leader_lease_ttl: int = 10
    server_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class ControlPlane:
    store: Store
    config: ServerConfig = field(default_factory=ServerConfig)

    def __post_init__(self) -> None:
        self.catalog = Catalog(self.store)
        self.kv = KV(self.store)
        self.sessions = SessionService(self.store, self.catalog, self.kv.write_lock)
        self.egress = EgressService(self.store)
        self.intentions = IntentionService(self.store, default_intention=self.config.default_intention,
                                           initial_default=self.config.initial_default_intention)
        self.ca = CAService(self.store, datacenter=self.config.datacenter, min_leaf_ttl=self.config.ca_min_leaf_ttl)
        self.acl = ACLService(self.store, self.config.acl, datacenter=self.config.datacenter,
                              data_dir=self.config.data_dir)
        self._last_heartbeat: dict[str, float] = {}
        self._heartbeat_seen: dict[str, int] = {}  # node -> modify_index of its shared heartbeat last seen
        self._reaper: asyncio.Task[None] | None = None
        # Singleton work: on the elected server only, every write fenced (control/singleton.py).
        self.leadership = leadership_for(self.store, self.config.server_id, self.config.leader_lease_ttl)
        fenced = self._leader_fenced = FencedStore(self.store, self.leadership)
        self._leader_catalog = Catalog(fenced)
        self._leader_acl = ACLService(fenced, self.config.acl, datacenter=self.config.datacenter,
                                      data_dir=self.config.data_dir)
        self._leader_ca = CAService(fenced, datacenter=self.config.datacenter,
                                    min_leaf_ttl=self.config.ca_min_leaf_ttl)

    @property
    def datacenter(self) -> str:
        return self.config.datacenter

    @property
    def cluster_id(self) -> str:
        return self.store.get(META_CLUSTER).value["ClusterID"]

    async def start(self) -> None:
        """Initialise cluster metadata once, and start the node reaper."""
        await create_once(self.store, META_CLUSTER, {"ClusterID": str(uuid.uuid4())})
        await self.intentions.start(f"{self.cluster_id}.tether", self.datacenter)
        await self.ca.start(self.cluster_id, prune=False)
        await self.acl.start()
        await self.sessions.start()
        await self.leadership.start()
        self._reaper = asyncio.create_task(while_leader(self.leadership, self._singleton_work, "singleton work"),
                                           name="singleton-work")

    async def _singleton_work(self) -> None:
        self._last_heartbeat.clear()  # a new leader gives every node a full TTL of grace
        await asyncio.gather(self._reap_nodes(), self._leader_ca.run_pruner())

    async def stop(self) -> None:
        await self.sessions.stop()
        await self.ca.stop()
        if self._reaper:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self.leadership.stop()

    async def heartbeat(self, node: str) -> None:
        """An agent is alive; revive its node check if the reaper had marked it dead.

        With several servers the heartbeat goes through the store, so the elected reaper
        sees it whichever server received it."""
        self._last_heartbeat[node] = time.monotonic()
        if self.leadership.shared:
            await self.store.commit([Put(HEARTBEATS + node, {"Server": self.config.server_id})])
        entry = self.store.get(f"{NODE_CHECKS}{node}/{NODE_CHECK_ID}")
        if entry is not None and entry.value["Status"] != PASSING:
            await self.catalog.update_check(node, NODE_CHECK_ID, PASSING, "Agent alive and reachable")

    async def _reap_nodes(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.node_ttl / 3, HEARTBEAT_INTERVAL))
            if self.acl.enabled:
                try:
                    await self._leader_acl.reap_expired()
                except TetherError as exc:  # retried at the next round; expired tokens resolve as not found anyway
                    log.warning("could not delete expired ACL tokens: %s", exc)
            now = time.monotonic()
            gone = []
            for beat in self.store.list(HEARTBEATS):  # heartbeats other servers received
                node = beat.key[len(HEARTBEATS):]
                if self.store.get(f"{NODES}{node}") is None:
                    gone.append(Delete(beat.key))  # a deregistered node: its heartbeat goes too
                elif self._heartbeat_seen.get(node) != beat.modify_index:
                    self._heartbeat_seen[node] = beat.modify_index
                    self._last_heartbeat[node] = now
            if gone:
                await self._leader_fenced.commit(gone[:100])  # under etcd's 128 per transaction; the rest next round
            for entry in self.store.list(NODE_CHECKS):
                check = entry.value
                if check["CheckID"] != NODE_CHECK_ID or check["Status"] == CRITICAL:
                    continue
                node = check["Node"]
                # A node we never heard from since start gets a full TTL of grace.
                seen = self._last_heartbeat.setdefault(node, now)
                if now - seen > self.config.node_ttl:
                    log.warning("node %s missed heartbeats for %.0fs; marking it critical", node, now - seen)
                    try:
                        await self._leader_catalog.update_check(node, NODE_CHECK_ID, CRITICAL,
                                                                "Agent not heard from")
                    except NotLeader:
                        raise  # while_leader notices the lost lease and stops this work
                    except Exception:  # the node was deregistered meanwhile; nothing to mark
                        log.debug("node %s vanished while reaping", node)
