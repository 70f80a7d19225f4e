"""The agent-driven sidecar: feeds the proxy engine from the local agent and keeps it current.

    sidecar = Sidecar(SidecarOptions(agent_addr="127.0.0.1:8500", sidecar_for="web"))
    await sidecar.start()        # resolve the registration, fetch identity + policy, open listeners
    ...                          # blocking watches keep everything current
    await sidecar.stop(15.0)     # drain (SIGTERM)

Where the config comes from (all through the local agent, `TETHER_HTTP_ADDR`):

  registration   /v1/agent/service/<proxy-id> (hash-blocking). `-sidecar-for ID` finds the
                 connect-proxy whose Proxy.DestinationServiceID is ID; `-proxy-id` names it;
                 `-service NAME` needs none (an unregistered proxy, sidecar_config.plan_for_service).
                 Changes (upstreams added/removed, ports) are applied without a restart.
  identity       /v1/agent/connect/ca/leaf/<service> + /ca/roots (index-blocking) -> update_tls:
                 new handshakes use the new material, live connections keep theirs.
  authorization  /v1/agent/connect/authz-snapshot?service=<service> (index-blocking: the
                 rules with this service as destination, whole or a 403) -> a PolicySnapshot ->
                 update_authorizer: `decide` runs in this process per connection, and live
                 connections that lost their permit are closed at once and logged.
  upstreams      /v1/health/connect/<dest>?passing (index-blocking) -> update_upstream.

Fail static: when the agent cannot be reached every watch keeps retrying with back-off, the
engine keeps serving what it has and logs it once (`config_source_failed`); the first
answer after that clears it. It ends by itself (`done` is set, `exit_code` says how) when
the agent answers that its registration is gone (0), or when its leaf has expired while
the agent is unreachable (1, after it stopped accepting: proxy/leafdeadline.py).
`reload()` (SIGHUP) asks the agent for everything at once and applies what changed.

Health: a registered sidecar passes its own listener check ("Connect Sidecar Listening", a TTL
check) while its public listener is open on the registration's port, and fails it while
draining (sidecar_health.py); no probe connects to it. A TCP probe from elsewhere (a custom
check, a load balancer) is recorded as a closed-before-hello handshake failure and nothing
else happens. Everything that completes a handshake is authorized.

Modes other than `direct` (Proxy.Mode) are handled by hooks: `register_mode_hook("transparent",
fn)`; `await fn(sidecar, plan)` runs after the listeners are open and after every plan change.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, TextIO

from tether.core.errors import InvalidInput, NotFound, TetherError, Unavailable
from tether.core.spiffe import DEFAULT_NAMESPACE, format_spiffe_id, parse_spiffe_id, service_id
from tether.proxy.agentclient import AgentClient
from tether.proxy.engine import Engine
from tether.proxy.leafdeadline import LeafDeadline
from tether.proxy.listener import Listener
from tether.proxy.sidecar_config import (
    DEFAULT_ADMIN_BIND, SidecarPlan, SnapshotAuthorizer, UpstreamPlan, instances_from_health, plan_for_service, plan_from_registration,
)
from tether.proxy.sidecar_health import ListenerCheck, find_listening_check, listening_state
from tether.core.policy_state import snapshot_from_agent_state
from tether.proxy.tls import TlsMaterial
from tether.proxy.resolve import resolve_instances
from tether.proxy.upstream import UpstreamSpec
from tether.proxy.watch import SourceHealth, cancel_watches, watch_hash, watch_index

log = logging.getLogger("tether.proxy.sidecar")

#: How long start() keeps trying to reach the agent before giving up (a managed sidecar is
#: restarted by the agent anyway; a person at a terminal wants an answer).
STARTUP_TIMEOUT = 30.0
#: Seconds live connections get to finish on SIGTERM. Below the agent's stop grace (10 s,
#: agent/supervisor.py) so a managed sidecar has always exited before the agent kills it.
DEFAULT_DRAIN_TIMEOUT = 5.0

ModeHook = Callable[["Sidecar", SidecarPlan], Awaitable[None]]
#: Proxy.Mode -> hook. The transparent-proxy work registers its handler here.
MODE_HOOKS: dict[str, ModeHook] = {}


def register_mode_hook(mode: str, hook: ModeHook) -> None:
    """Install the handler for registrations with `Proxy.Mode == mode`."""
    MODE_HOOKS[mode] = hook


@dataclass(frozen=True)
class SidecarOptions:
    agent_addr: str
    token: str | None = None
    sidecar_for: str = ""  # parent service ID
    proxy_id: str = ""  # the connect-proxy registration's ID
    service: str = ""  # unregistered proxy for this service name
    upstreams: tuple[str, ...] = ()  # "name:port" (with `service`)
    listen: str = ""  # "addr:port" public listener (with `service`)
    service_addr: str = ""  # "host:port" the local app (with `listen`)
    register: bool = False
    register_id: str = ""
    log_format: str = "json"
    admin_bind: tuple[str, int] | None = None  # None: Proxy.Config admin_bind, else 127.0.0.1:0
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    access_log: TextIO | None = None  # default: stderr
    startup_timeout: float = STARTUP_TIMEOUT


class Sidecar:
    def __init__(self, options: SidecarOptions, *, mode_hooks: Mapping[str, ModeHook] | None = None) -> None:
        self.options = options
        self.client = AgentClient(options.agent_addr, options.token)
        self.mode_hooks = MODE_HOOKS if mode_hooks is None else mode_hooks
        self.engine: Engine | None = None
        self.plan: SidecarPlan | None = None
        self.proxy_id = options.proxy_id
        self.trust_domain = ""
        self.datacenter = ""
        self.namespace = DEFAULT_NAMESPACE
        self.admin: tuple[str, int] | None = None
        self.registered_id = ""
        self.health = SourceHealth(f"agent at {self.client.addr}", self._failed, self._ok)
        self.deadline = LeafDeadline(self.client.addr, self._give_up)
        #: Set when the sidecar ends by itself (its registration is gone; its leaf expired with
        #: no agent to renew it); `exit_code` is then the process's exit status.
        self.done = asyncio.Event()
        self.exit_code = 0
        self._leaf: dict[str, Any] = {}
        self._roots: dict[str, Any] = {}
        self._known: dict[tuple[Any, Any], Any] = {}
        self._snapshot = None
        self._inbound: Listener | None = None
        self._inbound_error = ""  # why the public listener could not be (re)opened
        self.listener_check: ListenerCheck | None = None
        self._upstreams: dict[str, tuple[UpstreamPlan, Listener, asyncio.Task]] = {}
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Fetch everything once (retrying while the agent is unreachable), open the listeners
        and start the watches. Raises TetherError (or OSError for a port in use) on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.startup_timeout
        while True:
            try:
                return await self._start_once()
            except Unavailable as e:
                await self._discard()  # a half-built start must not keep its ports for the retry
                if loop.time() >= deadline:
                    raise Unavailable(f"{e} (gave up after {self.options.startup_timeout:g}s; "
                                      "is TETHER_HTTP_ADDR right?)") from None
                log.warning("waiting for the agent: %s", e)
                await asyncio.sleep(1.0)

    async def _discard(self) -> None:
        await cancel_watches(self._tasks)
        self._tasks.clear()
        self._upstreams.clear()
        self._inbound, self.plan, self.admin = None, None, None
        if self.engine is not None:
            await self.engine.close()
            self.engine = None

    async def _start_once(self) -> None:
        reg_hash, plan = await self._resolve()
        leaf = await self.client.get(f"/v1/agent/connect/ca/leaf/{plan.service}")
        # The leaf names our datacenter; asking /v1/agent/self would need agent:read, which a
        # service's token does not have (nor does it in Consul).
        own = parse_spiffe_id(leaf.body["ServiceURI"])
        self.datacenter = plan.datacenter or own.datacenter
        self.namespace = own.namespace  # an upstream without DestinationNamespace is in ours
        roots = await self.client.get("/v1/agent/connect/ca/roots")
        authz = await self.client.get("/v1/agent/connect/authz-snapshot", {"service": plan.service})
        self._leaf, self._roots = leaf.body, roots.body
        self.deadline.set_leaf(leaf.body)
        self.trust_domain = roots.body["TrustDomain"]
        self.engine = Engine(self._material(), access_log=self.options.access_log or sys.stderr,
                             log_format=self.options.log_format, handshake_timeout=plan.handshake_timeout)
        self._snapshot = snapshot_from_agent_state(authz.body, self.trust_domain)
        found = await find_listening_check(self.client, self.proxy_id) if reg_hash else None
        if found:
            self.listener_check = ListenerCheck(self.client, *found, self._listening_state)
        try:
            await self.apply_plan(plan, initial=True)
        except OSError as e:
            if self.listener_check is not None:
                await self.listener_check.last_report(listening_state(None, None, draining=False, error=f"cannot start: {e}"))
                self.listener_check = None  # that was its last word: stop() must not say "draining"
            raise
        if plan.admin_bind:
            self.admin = await self.engine.open_admin(*plan.admin_bind)
            log.info("admin endpoint (metrics, ready) on http://%s:%s/metrics", *self.admin)
        if self.options.register:
            await self._register()
        spawn = self._spawn
        spawn(watch_index(self.client, self.health, "leaf", f"/v1/agent/connect/ca/leaf/{plan.service}",
                          self._set_leaf, index=leaf.index))
        spawn(watch_index(self.client, self.health, "roots", "/v1/agent/connect/ca/roots", self._set_roots,
                          index=roots.index))
        spawn(watch_index(self.client, self.health, "authz", "/v1/agent/connect/authz-snapshot", self._set_authz,
                          index=authz.index, params={"service": plan.service}))
        if self.listener_check is not None:
            spawn(self.listener_check.run())
        if reg_hash:
            spawn(watch_hash(self.client, self.health, "registration", f"/v1/agent/service/{self.proxy_id}",
                             self._set_registration, content_hash=reg_hash, gone=self._registration_gone))

    async def _resolve(self) -> tuple[str, SidecarPlan]:
        """(registration ContentHash or "", plan) from -proxy-id / -sidecar-for / -service."""
        o = self.options
        if o.service:
            return "", plan_for_service(o.service, o.upstreams, listen=o.listen, service_addr=o.service_addr,
                                        admin_bind=o.admin_bind or DEFAULT_ADMIN_BIND)
        if not self.proxy_id:
            self.proxy_id = await self._find_sidecar(o.sidecar_for)
        try:
            doc = (await self.client.get(f"/v1/agent/service/{self.proxy_id}")).body
        except NotFound:
            hint = ""
            if self.proxy_id.endswith("-proxy") and not self.proxy_id.endswith("-sidecar-proxy"):
                # Consul 1.2 named a managed proxy <service-id>-proxy; Tether (like Consul 1.3+)
                # names it <service-id>-sidecar-proxy.
                hint = (f" (Consul 1.2 called the proxy of {self.proxy_id[:-len('-proxy')]!r} "
                        f"{self.proxy_id!r}; here it is {self.proxy_id[:-len('-proxy')] + '-sidecar-proxy'!r}, "
                        "or use -sidecar-for SERVICE_ID)")
            raise NotFound(f"no service {self.proxy_id!r} is registered with the agent at {self.client.addr}{hint}; "
                           "register it first, or give -service NAME for an unregistered proxy") from None
        return doc.get("ContentHash", ""), plan_from_registration(doc, admin_bind=o.admin_bind)

    async def _find_sidecar(self, parent_id: str) -> str:
        if not parent_id:
            raise InvalidInput("give -sidecar-for SERVICE_ID, -proxy-id PROXY_ID or -service NAME")
        services = (await self.client.get("/v1/agent/services")).body or {}
        for sid, svc in sorted(services.items()):
            if svc.get("Kind") == "connect-proxy" and (svc.get("Proxy") or {}).get("DestinationServiceID") == parent_id:
                return sid
        raise NotFound(f"no connect-proxy registered for service ID {parent_id!r} on the agent at "
                       f"{self.client.addr}; register it with \"connect\": {{\"sidecar_service\": {{}}}}")

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        return task

    # ------------------------------------------------------------------ the plan
    async def apply_plan(self, plan: SidecarPlan, *, initial: bool = False) -> None:
        """Open, move or close listeners so the engine matches `plan`. On `initial`, a port that
        cannot be bound raises; later, it is logged and the rest is applied."""
        old = self.plan
        self.plan = plan
        self.engine.handshake_timeout = plan.handshake_timeout  # read per new handshake
        await self._apply_inbound(plan, initial)
        for name in [n for n in self._upstreams if n not in {u.name for u in plan.upstreams}]:
            self._close_upstream(name)
        for up in plan.upstreams:
            current = self._upstreams.get(up.name)
            if current is not None and current[0] == up:
                continue
            if current is not None:
                self._close_upstream(up.name)
            try:
                await self._open_upstream(up)
            except (OSError, TetherError) as e:
                if initial:
                    raise
                log.error("upstream %s: cannot listen on %s:%s: %s", up.name, up.bind_host, up.bind_port, e)
        if old is not None and old.admin_bind != plan.admin_bind:
            log.warning("admin_bind changed to %s; restart the proxy to move the admin endpoint", plan.admin_bind)
        hook = self.mode_hooks.get(plan.mode)
        if hook is not None:
            await hook(self, plan)
        elif plan.mode != "direct" and (old is None or old.mode != plan.mode):
            log.warning("Proxy.Mode %r has no handler in this proxy; serving the direct listeners only", plan.mode)
        if self.listener_check is not None:
            self.listener_check.poke()

    async def _apply_inbound(self, plan: SidecarPlan, initial: bool) -> None:
        spec, lst = plan.inbound, self._inbound
        if lst is not None and spec is not None and (lst.spec.bind_host, lst.spec.bind_port) == (spec.bind_host, spec.bind_port):
            lst.spec = spec  # same socket: new connections read the new app address and timeout
            lst.gate.set_cap(spec.max_pending_handshakes)
        else:
            if lst is not None:
                self.engine.close_listener(lst)
                self._inbound = None
            if spec is not None:
                try:
                    self._inbound = await self.engine.open_inbound(spec)
                    self._inbound_error = ""
                except OSError as e:
                    if initial:
                        raise
                    self._inbound_error = str(e)
                    log.error("inbound %s: %s", spec.service, e)
        self._install_authorizer()

    def _upstream_params(self, up: UpstreamPlan) -> dict[str, str]:
        """The health query for an upstream's instances: passing, in its datacenter and namespace."""
        return {"passing": "1", "ns": up.namespace or self.namespace, **({"dc": up.datacenter} if up.datacenter else {})}

    async def _open_upstream(self, up: UpstreamPlan) -> None:
        params = self._upstream_params(up)
        path = f"/v1/health/connect/{up.name}"
        first = await self.client.get(path, params)
        instances = await resolve_instances(instances_from_health(first.body))
        spiffe = format_spiffe_id(service_id(self.trust_domain, up.datacenter or self.datacenter, up.name,
                                             up.namespace or self.namespace))
        spec = UpstreamSpec(up.name, up.bind_port, spiffe, bind_host=up.bind_host, policy=up.policy,
                            connect_timeout=up.connect_timeout)
        lst = await self.engine.open_upstream(spec, instances)

        async def apply(entries: Any) -> None:
            if up.name in self.engine.upstreams:
                self.engine.update_upstream(up.name, await resolve_instances(instances_from_health(entries)))

        task = self._spawn(watch_index(self.client, self.health, f"upstream {up.name}", path, apply,
                                       index=first.index, params=params))
        self._upstreams[up.name] = (up, lst, task)

    def _close_upstream(self, name: str) -> None:
        _, lst, task = self._upstreams.pop(name)
        task.cancel()
        self.engine.close_listener(lst)
        self.health.ok(f"upstream {name}")
        log.info("upstream %s closed (connections already open keep running)", name)

    # ------------------------------------------------------------------ watch callbacks
    def _material(self) -> TlsMaterial:
        leaf, roots = self._leaf, self._roots
        return TlsMaterial(cert_pem=leaf["CertPEM"], key_pem=leaf["PrivateKeyPEM"],
                           roots_pem=tuple(r["RootCert"] for r in roots.get("Roots") or ()),
                           spiffe_id=leaf["ServiceURI"])

    def _set_leaf(self, leaf: dict[str, Any]) -> None:
        self._leaf = leaf
        self.engine.update_tls(self._material())
        self.deadline.set_leaf(leaf)

    def _set_roots(self, roots: dict[str, Any]) -> None:
        self._roots = roots
        if roots.get("TrustDomain") and roots["TrustDomain"] != self.trust_domain:
            log.warning("trust domain changed from %s to %s; restart the proxy so upstreams expect the new IDs",
                        self.trust_domain, roots["TrustDomain"])
        self.engine.update_tls(self._material())

    def _set_authz(self, state: dict[str, Any]) -> None:
        snap = snapshot_from_agent_state(state, self.trust_domain, known=self._known)
        self._known = {(i.id, i.modify_index): i for i in snap.intentions if getattr(i, "id", None)}
        self._snapshot = snap
        closed = self._install_authorizer()
        log.info("authorization updated (index %s)%s", state.get("Index"),
                 f"; closed {closed} connection(s) no longer allowed" if closed else "")

    def _install_authorizer(self) -> int:
        spec = self.plan.inbound if self.plan else None
        port = spec.local_app_port if spec else None
        return self.engine.update_authorizer(SnapshotAuthorizer(self._snapshot, self.plan.service, port))

    async def _set_registration(self, doc: dict[str, Any]) -> None:
        plan = plan_from_registration(doc, admin_bind=self.options.admin_bind)
        if plan != self.plan:
            log.info("registration %s changed; applying it live", self.proxy_id)
            await self.apply_plan(plan)

    def _listening_state(self) -> tuple[str, str]:
        spec = self.plan.inbound if self.plan else None
        return listening_state(self._inbound.address if self._inbound is not None else None,
                               (spec.bind_host, spec.bind_port) if spec else None,
                               draining=self.engine is not None and self.engine.draining, error=self._inbound_error)

    def _failed(self, source: str, error: str) -> None:
        self.engine.config_source_failed(source, error)
        self.deadline.agent_lost()

    def _ok(self, source: str) -> None:
        self.engine.config_source_ok(source)
        self.deadline.agent_back()

    # ------------------------------------------------------------------ ending by itself
    def _registration_gone(self) -> None:
        log.warning("registration %s is gone from the agent at %s; draining and exiting",
                    self.proxy_id, self.client.addr)
        self._end(0)

    def _give_up(self, reason: str) -> None:
        log.error("%s; draining and exiting", reason)
        self.engine.stop_accepting()
        self._end(1)

    def _end(self, code: int) -> None:
        if not self.done.is_set():
            self.exit_code = code
            self.done.set()

    # ------------------------------------------------------------------ SIGHUP
    async def reload(self) -> None:
        """Ask the agent for everything now (registration, identity, roots, authorization,
        instances) and apply what changed, as the watches would; no connection is dropped.
        An unreachable agent changes nothing (logged)."""
        c = self.client
        try:
            if self.plan is not None and self.proxy_id and not self.options.service:
                try:
                    await self._set_registration((await c.get(f"/v1/agent/service/{self.proxy_id}")).body)
                except NotFound:
                    return self._registration_gone()
            self._leaf = (await c.get(f"/v1/agent/connect/ca/leaf/{self.plan.service}")).body
            self._set_roots((await c.get("/v1/agent/connect/ca/roots")).body)  # applies the new leaf too
            self.deadline.set_leaf(self._leaf)
            self._set_authz((await c.get("/v1/agent/connect/authz-snapshot", {"service": self.plan.service})).body)
            for name, (up, _, _) in list(self._upstreams.items()):
                entries = (await c.get(f"/v1/health/connect/{name}", self._upstream_params(up))).body
                if name in self.engine.upstreams:
                    self.engine.update_upstream(name, await resolve_instances(instances_from_health(entries)))
        except (TetherError, OSError, ValueError, KeyError, TypeError) as e:
            log.error("reload: %s; keeping the current config", e)
            return
        log.info("reloaded: registration, identity, roots, authorization and %d upstream(s) are current",
                 len(self._upstreams))

    # ------------------------------------------------------------------ -register
    async def _register(self) -> None:
        """Register this unregistered proxy as a Connect-native instance of its service, so
        other proxies find it (a connect-proxy registration would make the agent start a
        second, managed proxy for it)."""
        plan = self.plan
        if self._inbound is None:
            raise InvalidInput("-register needs a public listener: give -listen and -service-addr")
        host, port = self._inbound.address
        self.registered_id = self.options.register_id or f"{plan.service}-proxy"
        body = {"ID": self.registered_id, "Name": plan.service, "Port": port, "Connect": {"Native": True},
                "Address": "" if host in ("0.0.0.0", "::") else host}
        await self.client.put("/v1/agent/service/register", body)
        log.info("registered %s as %s on port %d", plan.service, self.registered_id, port)

    # ------------------------------------------------------------------ stop
    async def stop(self, drain_timeout: float | None = None) -> int:
        """Stop watching, deregister what -register added, drain; returns connections cut."""
        await cancel_watches(self._tasks)
        self.deadline.close()
        if self.listener_check is not None:  # peers stop choosing us before we stop accepting
            await self.listener_check.last_report(listening_state(None, None, draining=True))
        if self.registered_id:
            try:
                await self.client.put(f"/v1/agent/service/deregister/{self.registered_id}")
            except TetherError as e:
                log.warning("could not deregister %s: %s", self.registered_id, e)
        if self.engine is None:
            return 0
        cut = await self.engine.drain(self.options.drain_timeout if drain_timeout is None else drain_timeout)
        await self.engine.close()
        return cut

    def ready_line(self) -> str:
        """`READY inbound=h:p upstream.<name>=h:p admin=h:p`: what callers wait for on stderr."""
        parts = []
        if self._inbound is not None:
            parts.append("inbound=%s:%s" % self._inbound.address)
        parts += [f"upstream.{n}=%s:%s" % lst.address for n, (_, lst, _) in self._upstreams.items()]
        if self.admin:
            parts.append("admin=%s:%s" % self.admin)
        return "READY " + " ".join(parts)


async def _transparent_mode(sidecar: Sidecar, plan: SidecarPlan) -> None:
    # Imported on first use: a direct-mode sidecar never loads the egress code.
    from tether.proxy.egress.transparent import transparent_mode

    await transparent_mode(sidecar, plan)


register_mode_hook("transparent", _transparent_mode)

__all__ = ["MODE_HOOKS", "ModeHook", "Sidecar", "SidecarOptions", "register_mode_hook"]
