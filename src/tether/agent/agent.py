"""The node agent: owns this node's services and checks and keeps the catalog in step.

A registration is acknowledged only after the server has stored it (so an acknowledged
write survives an agent crash); the agent's own view is rebuilt from the catalog when
it restarts, so there is one source of truth. Checks run here; their statuses are
written to the catalog only when they change. A heartbeat tells the server the node is
alive, and a periodic re-sync repairs the catalog if it lost anything.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from tether.agent.acl import LocalTokens
from tether.agent.authz_cache import AuthzCache
from tether.agent.checks import PollingCheck, TTLCheck
from tether.agent.link import ServerLink
from tether.agent.ports import SidecarPorts
from tether.control.server import HEARTBEAT_INTERVAL
from tether.core.errors import InvalidInput, NotFound, PermissionDenied, TetherError
from tether.core.health import NODE_CHECK_ID, NODE_CHECK_NAME, PASSING, STATUSES, alias_status, worst
from tether.core.namespaces import DEFAULT_NAMESPACE, namespace_of
from tether.core.registration import (
    SIDECAR_PORT_RANGE, SIDECAR_SUFFIX, candidate_ports, expand_registration, format_check, no_free_port, sidecar_listener,
)
from tether.core.service import CheckDefinition, ServiceDefinition

log = logging.getLogger("tether.agent")

RESYNC_INTERVAL = 60.0  # anti-entropy: how often the full local state is re-asserted
RESTORE_RETRY = 5.0  # how often an agent the servers refused (no usable token yet) tries again


@dataclass
class AgentConfig:
    node: str
    node_id: str
    datacenter: str = "dc1"
    advertise: str = "127.0.0.1"
    node_meta: dict[str, str] = field(default_factory=dict)
    sidecar_port_range: tuple[int, int] = SIDECAR_PORT_RANGE


def _strip_indexes(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("CreateIndex", "ModifyIndex")}


class Agent:
    def __init__(self, config: AgentConfig, link: ServerLink, tokens: LocalTokens | None = None) -> None:
        self.config = config
        self.link = link
        # The token each local service was registered with (its sidecar acts with it).
        self.tokens = tokens if tokens is not None else LocalTokens(None)
        self._restored = False
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self._runners: dict[str, PollingCheck | TTLCheck] = {}
        self._http = httpx.AsyncClient(verify=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._resync_now = asyncio.Event()
        self.parked = 0  # readers waiting in wait_for_change now (tests wait for them)
        self._lock = asyncio.Lock()  # one registration change at a time
        self.cluster: dict[str, Any] = {}
        # Intentions + policy, kept current by a blocking watch: `agent.authz.decide(...)`.
        self.authz = AuthzCache(link)
        self.ports = SidecarPorts()  # sidecar ports chosen here, held while registered
        # Called with the service document whenever a local service is added/removed
        # (the sidecar supervisor hooks in here).
        self.on_service_change: list[Callable[[str, dict[str, Any] | None], None]] = []

    def namespace_of(self, service: str) -> str:
        """The namespace of local service `service` (`default` when it is not registered here)."""
        return next((namespace_of(s) for s in self.services.values() if s["Service"] == service), DEFAULT_NAMESPACE)

    @property
    def node_doc(self) -> dict[str, Any]:
        c = self.config
        return {"ID": c.node_id, "Node": c.node, "Address": c.advertise, "Datacenter": c.datacenter,
                "TaggedAddresses": {"lan": c.advertise, "wan": c.advertise}, "Meta": dict(c.node_meta)}

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.cluster = await self.link.cluster()
        await self.authz.start(f"{self.cluster['ClusterID']}.tether")
        try:
            await self._restore()
        except PermissionDenied as exc:
            # Consul's order of operations: an agent starts, then gets its token
            # (`tether acl set-agent-token agent ...`); until then it retries at every re-sync.
            log.error("the servers refused this agent (%s); it cannot restore or sync node %r until its token "
                      "has node:write on it: set acl.tokens.agent in its config, or run 'tether acl "
                      "set-agent-token agent <secret>'", exc, self.config.node)
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="agent-heartbeat"),
                       asyncio.create_task(self._resync_loop(), name="agent-resync")]

    async def _restore(self) -> None:
        """Rebuild the local view from the catalog (the one source of truth), then re-assert it."""
        services, checks = await self.link.node_state(self.config.node)
        for svc in services:
            self.services[svc["ID"]] = {**_strip_indexes(svc), "Node": self.config.node}
            self._notify(svc["ID"], self.services[svc["ID"]])  # a late restore starts their sidecars
        for check in checks:
            if check["CheckID"] != NODE_CHECK_ID:
                self.checks[check["CheckID"]] = _strip_indexes(check)
        for check in list(self.checks.values()):
            if check["CheckID"] not in self._runners:
                self._start_runner(check)
        await self._sync_all()
        self._restored = True
        log.info("agent %s: %d service(s) restored from the catalog", self.config.node, len(services))

    async def stop(self) -> None:
        await self.authz.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in self._runners.values():
            runner.stop()
        self.ports.close()
        await self._http.aclose()

    def _node_check(self) -> dict[str, Any]:
        return {"Node": self.config.node, "CheckID": NODE_CHECK_ID, "Name": NODE_CHECK_NAME, "Status": PASSING,
                "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
                "ServiceTags": [], "Type": "", "Definition": {}}

    async def _sync_all(self) -> None:
        await self.link.sync(self.node_doc, list(self.services.values()),
                             [self._node_check(), *self.checks.values()])

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.link.heartbeat(self.config.node)
            except TetherError as exc:
                log.warning("heartbeat failed (serving with local state): %s", exc)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _resync_loop(self) -> None:
        while True:
            try:  # a token change (resync_soon) cuts the wait short
                await asyncio.wait_for(self._resync_now.wait(), RESYNC_INTERVAL if self._restored else RESTORE_RETRY)
            except asyncio.TimeoutError:
                pass
            await self.resync()

    async def resync(self) -> None:
        """Re-assert the local state now (and restore it first if that never succeeded)."""
        self._resync_now.clear()
        try:
            async with self._lock:
                await (self._sync_all() if self._restored else self._restore())
        except TetherError as exc:
            log.warning("anti-entropy sync failed, will retry: %s", exc)

    def resync_soon(self) -> None:
        """Called when the agent's token changes: retry what the old one could not do."""
        self._resync_now.set()

    # -- services --------------------------------------------------------------------

    async def register_service(self, definition: ServiceDefinition, *, replace_existing_checks: bool = False,
                               token: str = "", authorize: Callable[[list[dict[str, Any]]], None] | None = None) -> str:
        """Register (or replace) a local service; `token` is what its sidecar will act with.

        `authorize(services)` sees every service the definition expands to (the sidecar
        included) before anything is written, and raises to refuse (the API's ACL check)."""
        async with self._lock:
            service_id = definition.ID or definition.Name
            sidecar_id = service_id + SIDECAR_SUFFIX
            sidecar_port, held = self._choose_sidecar_port(definition, sidecar_id)
            try:
                await self._register(definition, sidecar_id, sidecar_port, replace_existing_checks, token, authorize)
            except BaseException:
                if held is not None:
                    held.close()
                raise
            if held is not None:
                self.ports.keep(sidecar_id, held)
            elif sidecar_port == 0:  # no sidecar now, or one on a port of its own
                self.ports.release(sidecar_id)
            return service_id

    def _choose_sidecar_port(self, definition: ServiceDefinition, sidecar_id: str) -> tuple[int, socket.socket | None]:
        """(port, held socket) for a sidecar the agent must place; (0, None) when there is none
        or it has its own port. A re-registered sidecar keeps the port it has."""
        listener = sidecar_listener(definition)
        if listener is None or listener.port:
            return 0, None
        used = {s["Port"] for sid, s in self.services.items() if sid != sidecar_id}
        lo, hi = self.config.sidecar_port_range
        old = self.services.get(sidecar_id)
        if old and lo <= old["Port"] <= hi and old["Port"] not in used:
            return old["Port"], None
        held = self.ports.choose(listener.bind_address, candidate_ports(used, (lo, hi)))
        if held is None:
            raise no_free_port((lo, hi))
        return held.getsockname()[1], held

    async def _register(self, definition: ServiceDefinition, sidecar_id: str, sidecar_port: int,
                        replace_existing_checks: bool, token: str,
                        authorize: Callable[[list[dict[str, Any]]], None] | None) -> None:
        old_sidecar = self.services.get(sidecar_id)
        reg = expand_registration(definition, node=self.config.node, datacenter=self.config.datacenter,
                                  sidecar_port=sidecar_port, port_range=self.config.sidecar_port_range)
        new_ids = {s["ID"] for s in reg.services}
        stale_services = [sidecar_id] if old_sidecar and sidecar_id not in new_ids else []
        new_checks = {c["CheckID"]: self._keep_status(c) for c in reg.checks}
        stale_checks = [cid for cid, c in self.checks.items()
                        if c["ServiceID"] in new_ids and cid not in new_checks and replace_existing_checks]
        for svc in reg.services:
            self._check_port_free(svc)
        if authorize is not None:
            authorize(list(reg.services))
        await self.link.sync(self.node_doc, list(reg.services), list(new_checks.values()))
        for sid in stale_services:
            await self._drop_service(sid)
        for cid in stale_checks:
            await self.link.deregister_check(self.config.node, cid)
            self._drop_check(cid)
        for svc in reg.services:
            self.tokens.set_service(svc["ID"], token)
            self.services[svc["ID"]] = svc
            self._notify(svc["ID"], svc)
        for check in new_checks.values():
            self._drop_check(check["CheckID"])
            self.checks[check["CheckID"]] = check
            self._start_runner(check)
        await self._refresh_aliases()
        self._touch()

    def _keep_status(self, check: dict[str, Any]) -> dict[str, Any]:
        """A re-registered check with the same definition keeps its status (no flapping)."""
        old = self.checks.get(check["CheckID"])
        if old and old["Definition"] == check["Definition"]:
            return {**check, "Status": old["Status"], "Output": old["Output"]}
        return check

    def _check_port_free(self, svc: dict[str, Any]) -> None:
        if svc["Kind"] != "connect-proxy" or not svc["Port"]:
            return
        for other in self.services.values():
            if other["ID"] != svc["ID"] and other["Kind"] == "connect-proxy" and other["Port"] == svc["Port"]:
                raise InvalidInput(f"sidecar port {svc['Port']} is already used by {other['ID']!r}")

    async def deregister_service(self, service_id: str) -> None:
        async with self._lock:
            if service_id not in self.services:
                raise NotFound(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                               "not the service name.")
            sidecar = service_id + SIDECAR_SUFFIX
            for sid in [service_id] + ([sidecar] if sidecar in self.services else []):
                await self._drop_service(sid)
            await self._refresh_aliases()
            self._touch()

    async def _drop_service(self, service_id: str) -> None:
        try:
            await self.link.deregister_service(self.config.node, service_id)
        except NotFound:
            pass  # already gone from the catalog: the goal is reached
        for cid in [cid for cid, c in self.checks.items() if c["ServiceID"] == service_id]:
            self._drop_check(cid)
        self.services.pop(service_id, None)
        self.ports.release(service_id)
        self.tokens.drop_service(service_id)
        self._notify(service_id, None)

    def _notify(self, service_id: str, doc: dict[str, Any] | None) -> None:
        for callback in self.on_service_change:
            callback(service_id, doc)

    # -- checks ----------------------------------------------------------------------

    async def register_check(self, definition: CheckDefinition) -> str:
        async with self._lock:
            service = None
            if definition.ServiceID:
                service = self.services.get(definition.ServiceID)
                if service is None:
                    raise NotFound(f"ServiceID: unknown service {definition.ServiceID!r} on this agent")
            check = format_check(definition, service, self.config.node, 0, 1)
            if not definition.CheckID:  # Consul: a check registered on its own is named by its Name
                check["CheckID"] = definition.Name
            check = self._keep_status(check)
            await self.link.sync(self.node_doc, [], [check])
            self._drop_check(check["CheckID"])
            self.checks[check["CheckID"]] = check
            self._start_runner(check)
            await self._refresh_aliases()
            self._touch()
            return check["CheckID"]

    async def set_passive_check(self, check: dict[str, Any]) -> None:
        """A check the agent does not run (maintenance mode): stored as given and synced."""
        async with self._lock:
            await self.link.sync(self.node_doc, [], [check])
            self._drop_check(check["CheckID"])
            self.checks[check["CheckID"]] = check
            await self._refresh_aliases()
            self._touch()

    async def deregister_check(self, check_id: str) -> None:
        async with self._lock:
            if check_id not in self.checks:
                raise NotFound(f"Unknown check ID {check_id!r}")
            await self.link.deregister_check(self.config.node, check_id)
            self._drop_check(check_id)
            self._touch()

    async def update_ttl(self, check_id: str, status: str, output: str) -> None:
        """/v1/agent/check/pass|warn|fail|update: only TTL checks take outside updates."""
        check = self.checks.get(check_id)
        if check is None:
            raise NotFound(f"Unknown check ID {check_id!r}")
        if check["Type"] != "ttl":
            raise InvalidInput(f"check {check_id!r} is a {check['Type'] or 'catalog'} check; only TTL checks take updates")
        if status not in STATUSES:
            raise InvalidInput(f"Status must be one of {', '.join(STATUSES)}, not {status!r}")
        runner = self._runners.get(check_id)
        if isinstance(runner, TTLCheck):
            runner.arm()
        await self.report(check_id, status, output)

    async def report(self, check_id: str, status: str, output: str) -> None:
        """A check's new result: store it if it changed, then recompute dependent aliases."""
        check = self.checks.get(check_id)
        if check is None or (check["Status"] == status and check["Output"] == output):
            return
        await self.link.update_check(self.config.node, check_id, status, output)
        self.checks[check_id] = {**check, "Status": status, "Output": output}
        if check["Status"] != status:
            log.info("check %s is now %s", check_id, status)
        await self._refresh_aliases()
        self._touch()

    async def _refresh_aliases(self) -> None:
        for check in list(self.checks.values()):
            target = check["Definition"].get("AliasService")
            if not target:
                continue
            target_checks = [c for c in self.checks.values() if c["ServiceID"] == target]
            status, output = alias_status(target_checks, target in self.services)
            if (status, output) != (check["Status"], check["Output"]):
                await self.link.update_check(self.config.node, check["CheckID"], status, output)
                self.checks[check["CheckID"]] = {**check, "Status": status, "Output": output}

    def _start_runner(self, check: dict[str, Any]) -> None:
        kind = check["Type"]
        if kind in ("tcp", "http"):
            self._runners[check["CheckID"]] = PollingCheck(check, self.report, self._http)
        elif kind == "ttl":
            self._runners[check["CheckID"]] = TTLCheck(check, self.report)

    def _drop_check(self, check_id: str) -> None:
        runner = self._runners.pop(check_id, None)
        if runner:
            runner.stop()
        self.checks.pop(check_id, None)

    # -- views -----------------------------------------------------------------------

    def service_status(self, service_id: str) -> str:
        return worst(c["Status"] for c in self.checks.values() if c["ServiceID"] == service_id)

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, timeout: float) -> None:
        self.parked += 1
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self.parked -= 1



