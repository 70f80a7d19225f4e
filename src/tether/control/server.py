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
from tether.control.catalog import NODE_CHECKS, Catalog
from tether.control.egress import EgressService
from tether.control.intentions import IntentionService
from tether.control.kv import KV
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS
from tether.core.errors import TetherError
from tether.core.health import CRITICAL, NODE_CHECK_ID, PASSING
from tether.store.base import Store, create_once

log = logging.getLogger("tether.server")

# An agent heartbeats every HEARTBEAT_INTERVAL; missing NODE_TTL of them marks it dead.
HEARTBEAT_INTERVAL = 10.0
NODE_TTL = 30.0
META_CLUSTER = "meta/cluster"


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


@dataclass
class ControlPlane:
    store: Store
    config: ServerConfig = field(default_factory=ServerConfig)

    def __post_init__(self) -> None:
        self.catalog = Catalog(self.store)
        self.kv = KV(self.store)
        self.egress = EgressService(self.store)
        self.intentions = IntentionService(self.store, default_intention=self.config.default_intention,
                                           initial_default=self.config.initial_default_intention)
        self.ca = CAService(self.store, datacenter=self.config.datacenter, min_leaf_ttl=self.config.ca_min_leaf_ttl)
        self.acl = ACLService(self.store, self.config.acl, datacenter=self.config.datacenter,
                              data_dir=self.config.data_dir)
        self._last_heartbeat: dict[str, float] = {}
        self._reaper: asyncio.Task[None] | None = None

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
        await self.ca.start(self.cluster_id)
        await self.acl.start()
        self._reaper = asyncio.create_task(self._reap_nodes(), name="node-reaper")

    async def stop(self) -> None:
        await self.ca.stop()
        if self._reaper:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)

    async def heartbeat(self, node: str) -> None:
        """An agent is alive; revive its node check if the reaper had marked it dead."""
        self._last_heartbeat[node] = time.monotonic()
        entry = self.store.get(f"{NODE_CHECKS}{node}/{NODE_CHECK_ID}")
        if entry is not None and entry.value["Status"] != PASSING:
            await self.catalog.update_check(node, NODE_CHECK_ID, PASSING, "Agent alive and reachable")

    async def _reap_nodes(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.node_ttl / 3, HEARTBEAT_INTERVAL))
            if self.acl.enabled:
                try:
                    await self.acl.reap_expired()
                except TetherError as exc:  # retried at the next round; expired tokens resolve as not found anyway
                    log.warning("could not delete expired ACL tokens: %s", exc)
            now = time.monotonic()
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
                        await self.catalog.update_check(node, NODE_CHECK_ID, CRITICAL, "Agent not heard from")
                    except Exception:  # the node was deregistered meanwhile; nothing to mark
                        log.debug("node %s vanished while reaping", node)
