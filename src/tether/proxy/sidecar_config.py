"""What a sidecar should run, derived from the agent's answers: pure functions, no I/O.

`plan_from_registration(doc)` reads a connect-proxy registration (`/v1/agent/service/<id>`)
into a `SidecarPlan`: the public listener (Consul's `Proxy.Config` keys `bind_address`,
`bind_port`, `local_service_address`, `local_connect_timeout_ms`, `handshake_timeout_ms`, and
Tether's `max_pending_handshakes`),
one upstream listener per `Proxy.Upstreams` entry (`LocalBindAddress` default 127.0.0.1,
`LocalBindPort`; per-upstream `Config.connect_timeout_ms` and Tether's `Config.lb_policy`),
the admin endpoint (`admin_bind` / `prometheus_bind`) and the mode. `plan_for_service` is
the same for an unregistered proxy (`tether connect proxy -service NAME`). Every problem
in a registration is reported at once.

`instances_from_health` turns `/v1/health/connect/<dest>` entries into engine Instances,
and `SnapshotAuthorizer` is the per-connection authorizer handed to the engine: it runs
`core.authz.decide` on the PolicySnapshot (core/policy_state.py builds it), with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tether.core.admission import DEFAULT_MAX_PENDING_HANDSHAKES
from tether.core.authz import Decision, PolicySnapshot, Source, decide
from tether.core.errors import InvalidInput, TetherError
from tether.core.spiffe import parse_spiffe_id
from tether.proxy.inbound import DEFAULT_CONNECT_TIMEOUT, InboundSpec
from tether.proxy.pool import POLICIES, ROUND_ROBIN, Instance

#: Where the admin endpoint (/metrics, /ready) listens unless told: loopback, a free port
#: (printed in the log), so many sidecars on one host never collide.
DEFAULT_ADMIN_BIND = ("127.0.0.1", 0)
#: Consul's built-in proxy binds its public listener on every interface.
DEFAULT_BIND_ADDRESS = "0.0.0.0"
#: Upstream listeners are for the local application only.
DEFAULT_UPSTREAM_BIND = "127.0.0.1"
#: Consul's handshake_timeout_ms default.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Parsed SPIFFE IDs kept per authorizer (a sidecar sees a handful of callers).
IDENTITY_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class UpstreamPlan:
    name: str
    bind_port: int
    bind_host: str = DEFAULT_UPSTREAM_BIND
    datacenter: str = ""  # "" = the local datacenter
    policy: str = ROUND_ROBIN
    namespace: str = ""  # DestinationNamespace; "" = the proxy's own (as Consul defaults it)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@dataclass(frozen=True, slots=True)
class SidecarPlan:
    """Everything the sidecar opens; two plans compare equal when nothing needs reopening."""

    service: str  # the local service this proxy represents: its identity and authz destination
    inbound: InboundSpec | None
    upstreams: tuple[UpstreamPlan, ...] = ()
    admin_bind: tuple[str, int] | None = DEFAULT_ADMIN_BIND
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    mode: str = "direct"
    datacenter: str = ""
    registration: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def parse_host_port(text: str, what: str, *, default_host: str = "") -> tuple[str, int]:
    """(host, port) from `host:port`, `[v6]:port` or `:port` (host = default_host)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidInput(f"{what}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or default_host, int(port)


def _ms(errors: list[str], config: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        errors.append(f"{where}.{key}: {value!r} must be a positive number of milliseconds")
        return default
    return value / 1000.0


def _count(errors: list[str], config: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.append(f"{where}.{key}: {value!r} must be a whole number, at least 1")
        return default
    return value


def _admin_bind(errors: list[str], config: Mapping[str, Any], default: tuple[str, int] | None) -> tuple[str, int] | None:
    raw = config.get("admin_bind") or config.get("prometheus_bind")
    if not raw:
        return default
    try:
        return parse_host_port(raw, "Proxy.Config.admin_bind", default_host="127.0.0.1")
    except InvalidInput as e:
        errors.append(e.message)
        return default


def plan_from_registration(doc: Mapping[str, Any], *, admin_bind: tuple[str, int] | None = None) -> SidecarPlan:
    """The plan for a connect-proxy registration. `admin_bind` (the -admin-bind flag) wins over
    Proxy.Config's. Raises InvalidInput naming every problem."""
    errors: list[str] = []
    if doc.get("Kind") != "connect-proxy":
        raise InvalidInput(f"service {doc.get('ID')!r} is not a connect-proxy (Kind {doc.get('Kind')!r})")
    proxy = doc.get("Proxy") or {}
    config = proxy.get("Config") or {}
    service = proxy.get("DestinationServiceName") or ""
    if not service:
        errors.append("Proxy.DestinationServiceName: missing; the proxy must know which service it represents")
    app_port = proxy.get("LocalServicePort") or 0
    bind_port = config.get("bind_port", doc.get("Port") or 0)
    inbound = None
    if app_port:
        inbound = InboundSpec(
            service=service or "?", local_app_port=app_port,
            local_app_host=config.get("local_service_address") or proxy.get("LocalServiceAddress") or "127.0.0.1",
            bind_host=config.get("bind_address") or DEFAULT_BIND_ADDRESS, bind_port=bind_port,
            connect_timeout=_ms(errors, config, "local_connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT, "Proxy.Config"),
            max_pending_handshakes=_count(errors, config, "max_pending_handshakes", DEFAULT_MAX_PENDING_HANDSHAKES,
                                          "Proxy.Config"))
        _validate(errors, inbound)
    upstreams = []
    for i, up in enumerate(proxy.get("Upstreams") or ()):
        plan = _upstream(errors, up, f"Proxy.Upstreams[{i}]")
        if plan is not None:
            upstreams.append(plan)
    _check_unique(errors, upstreams)
    plan = SidecarPlan(
        service=service, inbound=inbound, upstreams=tuple(upstreams),
        admin_bind=admin_bind or _admin_bind(errors, config, DEFAULT_ADMIN_BIND),
        handshake_timeout=_ms(errors, config, "handshake_timeout_ms", DEFAULT_HANDSHAKE_TIMEOUT, "Proxy.Config"),
        mode=proxy.get("Mode") or "direct", datacenter=doc.get("Datacenter") or "", registration=doc)
    if errors:
        raise InvalidInput(f"proxy registration {doc.get('ID')!r}: " + "; ".join(errors))
    return plan


def plan_for_service(service: str, upstreams: Sequence[str] = (), *, listen: str = "", service_addr: str = "",
                     admin_bind: tuple[str, int] | None = DEFAULT_ADMIN_BIND) -> SidecarPlan:
    """The plan for an unregistered proxy: `-service NAME [-upstream name:port]... [-listen A -service-addr B]`."""
    errors: list[str] = []
    inbound = None
    if bool(listen) != bool(service_addr):
        errors.append("-listen and -service-addr go together: the public listener forwards to the local service")
    elif listen:
        try:
            bind_host, bind_port = parse_host_port(listen, "-listen", default_host=DEFAULT_BIND_ADDRESS)
            app_host, app_port = parse_host_port(service_addr, "-service-addr", default_host="127.0.0.1")
            inbound = InboundSpec(service=service, local_app_port=app_port, local_app_host=app_host,
                                  bind_host=bind_host, bind_port=bind_port)
            _validate(errors, inbound)
        except InvalidInput as e:
            errors.append(e.message)
    plans = []
    for text in upstreams:
        name, sep, port = text.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            errors.append(f"-upstream {text!r}: expected NAME:PORT, e.g. db:9191")
            continue
        plans.append(UpstreamPlan(name=name, bind_port=int(port)))
    _check_unique(errors, plans)
    if not inbound and not plans and not errors:
        errors.append("nothing to proxy: give -upstream NAME:PORT, or -listen with -service-addr")
    if errors:
        raise InvalidInput(f"proxy for {service!r}: " + "; ".join(errors))
    return SidecarPlan(service=service, inbound=inbound, upstreams=tuple(plans), admin_bind=admin_bind)


def _validate(errors: list[str], spec: Any) -> None:
    try:
        spec.validate()
    except InvalidInput as e:
        errors.append(e.message)


def _upstream(errors: list[str], up: Mapping[str, Any], where: str) -> UpstreamPlan | None:
    name = up.get("DestinationName") or ""
    kind = up.get("DestinationType") or "service"
    config = up.get("Config") or {}
    problems = len(errors)
    if not name:
        errors.append(f"{where}.DestinationName: missing")
    if kind != "service":
        errors.append(f"{where}.DestinationType: {kind!r} is not supported; use 'service'")
    if up.get("LocalBindSocketPath"):
        errors.append(f"{where}.LocalBindSocketPath: unix sockets are not supported; use LocalBindPort")
    port = up.get("LocalBindPort") or 0
    if not isinstance(port, int) or not 0 < port < 65536:
        errors.append(f"{where}.LocalBindPort: {port!r} must be a TCP port (1-65535)")
    policy = config.get("lb_policy") or ROUND_ROBIN
    if policy not in POLICIES:
        errors.append(f"{where}.Config.lb_policy: {policy!r}; use one of {', '.join(POLICIES)}")
    timeout = _ms(errors, config, "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT, f"{where}.Config")
    if len(errors) != problems:
        return None
    return UpstreamPlan(name=name, bind_port=port, bind_host=up.get("LocalBindAddress") or DEFAULT_UPSTREAM_BIND,
                        datacenter=up.get("Datacenter") or "", policy=policy, connect_timeout=timeout,
                        namespace=up.get("DestinationNamespace") or "")


def _check_unique(errors: list[str], plans: Sequence[UpstreamPlan]) -> None:
    seen: dict[str, UpstreamPlan] = {}
    binds: set[tuple[str, int]] = set()
    for p in plans:
        if p.name in seen:
            errors.append(f"upstream {p.name!r} is listed twice; one listener per destination")
        if (p.bind_host, p.bind_port) in binds:
            errors.append(f"upstream {p.name!r}: {p.bind_host}:{p.bind_port} is already used by another upstream")
        seen[p.name] = p
        binds.add((p.bind_host, p.bind_port))


def instances_from_health(entries: Sequence[Mapping[str, Any]]) -> list[Instance]:
    """Engine instances from `/v1/health/connect/<dest>?passing` entries, in the agent's order.

    The address is the instance's own, else its node's (Consul's rule)."""
    out = []
    for e in entries or ():
        svc = e.get("Service") or {}
        host = svc.get("Address") or (e.get("Node") or {}).get("Address") or ""
        port = svc.get("Port") or 0
        if host and port:
            out.append(Instance(host, int(port)))
    return out


class SnapshotAuthorizer:
    """`engine` authorizer: decide(snapshot, Source(identity, ip), service, app_port) per connection.

    The port given to `decide` is the local application's port (what a ServerPolicy names,
    e.g. `db:5432`), not the proxy's public port. Parsed SPIFFE IDs are memoized: a sidecar
    sees the same few callers over and over.
    """

    __slots__ = ("snapshot", "service", "port", "_ids")

    def __init__(self, snapshot: PolicySnapshot, service: str, port: int | None) -> None:
        self.snapshot = snapshot
        self.service = service
        self.port = port
        self._ids: dict[str, Any] = {}

    def __call__(self, source: str | None, peer_ip: str, _listener_port: int) -> Decision:
        identity = None
        if source is not None:
            identity = self._ids.get(source)
            if identity is None:
                try:
                    identity = parse_spiffe_id(source)
                except TetherError:
                    identity = False  # remembered as "not a service identity": unauthenticated
                if len(self._ids) >= IDENTITY_CACHE_SIZE:
                    self._ids.clear()
                self._ids[source] = identity
            identity = identity or None
        return decide(self.snapshot, Source(identity, peer_ip), self.service, self.port)

    def plaintext(self, peer_ip: str, _listener_port: int) -> Decision:
        """A client that sent no TLS: the same decide, as a plaintext caller."""
        return decide(self.snapshot, Source(None, peer_ip, plaintext=True), self.service, self.port)
