"""Expanding a service definition into catalog documents, with Consul's defaults.

A definition with `"connect": {"sidecar_service": {}}` (or Consul 1.2's managed
`"connect": {"proxy": {...}}`) becomes two instances: the service and its sidecar,
`<id>-sidecar-proxy`, kind connect-proxy, whose destination fields come from the parent.

Where the sidecar listens is one fact that the catalog, its health check and the listener
share: `sidecar_service.port`, else `Proxy.Config.bind_port` (Consul 1.2's managed proxy
sets only that), else a port the agent chooses from 21000-21255 (the agent tests it with a
bind first: `sidecar_listener` says what to test, `candidate_ports` in which order). A
specific `bind_address` is also the address the catalog advertises.

The sidecar gets two checks: its listener's and an alias of its parent, so it is healthy only
when both are. Tether's own proxy passes the listener check itself (a TTL check it refreshes
while its public listener is open, named `SIDECAR_LISTENING_CHECK`), which proves the listener
is that sidecar's; a TCP connect would pass against any process holding the port. A sidecar
that runs another data plane (`exec_mode: daemon` with a `command`) gets Consul's TCP check
on its listener, since Tether cannot ask it.

Documents are plain dicts in Consul's JSON shapes (AgentService, HealthCheck); the
control plane stores them as they are and the API returns them with indexes added.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from tether.core.errors import InvalidInput
from tether.core.health import SIDECAR_LISTENING_CHECK
from tether.core.namespaces import DEFAULT_NAMESPACE
from tether.core.service import CheckDefinition, ProxyDefinition, ServiceDefinition, Upstream

SIDECAR_SUFFIX = "-sidecar-proxy"
SIDECAR_PORT_RANGE = (21000, 21255)  # Consul's sidecar_min_port..sidecar_max_port
SIDECAR_CHECK_INTERVAL = "10s"  # Consul's "Connect Sidecar Listening" interval (TCP form)
#: Tether's proxy refreshes its listener check every third of this; a proxy killed without
#: a chance to say so turns critical after it.
SIDECAR_LISTENING_TTL = "15s"
#: Consul's built-in proxy binds its public listener on every interface.
DEFAULT_BIND_ADDRESS = "0.0.0.0"
PROXY_KIND = "connect-proxy"


@dataclass(frozen=True)
class Registration:
    """What one definition puts into the catalog: instances and their checks."""

    services: tuple[dict[str, Any], ...]
    checks: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class SidecarListener:
    """Where a definition's sidecar will listen; `port` 0 means the agent chooses one."""

    bind_address: str
    port: int


def sidecar_listener(d: ServiceDefinition) -> SidecarListener | None:
    """The sidecar's listener, for the agent to test and hold before it registers; None
    when the definition has no sidecar."""
    sidecar = _sidecar_definition(d)
    if sidecar is None:
        return None
    return SidecarListener(_bind_address(sidecar) or DEFAULT_BIND_ADDRESS, sidecar.Port)


def expand_registration(
    d: ServiceDefinition,
    *,
    node: str,
    datacenter: str,
    used_ports: Iterable[int] = (),
    port_range: tuple[int, int] = SIDECAR_PORT_RANGE,
    sidecar_port: int = 0,
) -> Registration:
    """The catalog documents for `d`. A sidecar without a port of its own gets
    `sidecar_port` (the agent's choice), else the first port of the range not in `used_ports`."""
    service = format_service(d, node=node, datacenter=datacenter)
    checks = [format_check(c, service, node, i, len(_checks_of(d))) for i, c in enumerate(_checks_of(d))]
    services = [service]
    sidecar = _sidecar_definition(d)
    if sidecar is not None:
        if not sidecar.Port:
            sidecar = sidecar.model_copy(update={"Port": sidecar_port or allocate_port(used_ports, port_range)})
        proxy_doc = format_service(sidecar, node=node, datacenter=datacenter)
        services.append(proxy_doc)
        sidecar_checks = list(_checks_of(sidecar)) or _default_sidecar_checks(sidecar, service)
        checks += [format_check(c, proxy_doc, node, i, len(sidecar_checks)) for i, c in enumerate(sidecar_checks)]
    return Registration(tuple(services), tuple(checks))


def candidate_ports(used: Iterable[int], port_range: tuple[int, int] = SIDECAR_PORT_RANGE) -> Iterator[int]:
    """The range's ports not used by this agent's services, lowest first."""
    taken = set(used)
    return (port for port in range(port_range[0], port_range[1] + 1) if port not in taken)


def no_free_port(port_range: tuple[int, int]) -> InvalidInput:
    return InvalidInput(f"no free sidecar port in {port_range[0]}-{port_range[1]}: give the sidecar an explicit Port")


def allocate_port(used: Iterable[int], port_range: tuple[int, int] = SIDECAR_PORT_RANGE) -> int:
    for port in candidate_ports(used, port_range):
        return port
    raise no_free_port(port_range)


def _checks_of(d: ServiceDefinition) -> tuple[CheckDefinition, ...]:
    return ((d.Check,) if d.Check else ()) + d.Checks


def _sidecar_definition(d: ServiceDefinition) -> ServiceDefinition | None:
    """The sidecar's own definition with the parent's defaults filled in, or None."""
    if d.Connect is None or (d.Connect.SidecarService is None and d.Connect.Proxy is None):
        return None
    parent_id = d.ID or d.Name
    base = d.Connect.SidecarService or ServiceDefinition()
    proxy = base.Proxy.model_dump() if base.Proxy else {}
    managed = d.Connect.Proxy
    if managed is not None:  # Consul 1.2 form: a managed proxy with its own command
        proxy["Upstreams"] = managed.Upstreams
        config = dict(managed.Config)
        if managed.ExecMode:
            config["exec_mode"] = managed.ExecMode
        if managed.Command:
            config["command"] = list(managed.Command)
        proxy["Config"] = config
    proxy["DestinationServiceName"] = proxy.get("DestinationServiceName") or d.Name
    proxy["DestinationServiceID"] = proxy.get("DestinationServiceID") or parent_id
    proxy["LocalServiceAddress"] = proxy.get("LocalServiceAddress") or "127.0.0.1"
    proxy["LocalServicePort"] = proxy.get("LocalServicePort") or d.Port
    config = proxy.get("Config") or {}
    bind_address = config.get("bind_address") or ""
    specific = bind_address if bind_address and not ipaddress.ip_address(bind_address).is_unspecified else ""
    return base.model_copy(update={
        "ID": parent_id + SIDECAR_SUFFIX,
        "Name": base.Name or d.Name + SIDECAR_SUFFIX,
        "Kind": PROXY_KIND,
        "Port": base.Port or config.get("bind_port") or 0,
        "Tags": base.Tags or d.Tags,
        "Meta": base.Meta or d.Meta,
        "Namespace": d.Namespace,  # a sidecar is in its service's namespace
        # Peers dial the catalog's address: a listener on one address is advertised there.
        "Address": base.Address or specific or d.Address,
        "Proxy": ProxyDefinition.model_validate(proxy),
    })


def _bind_address(sidecar: ServiceDefinition) -> str:
    return (sidecar.Proxy.Config.get("bind_address") if sidecar.Proxy else "") or ""


def runs_tether_proxy(proxy_config: dict[str, Any]) -> bool:
    """False when the registration names its own data plane (Consul 1.2 `exec_mode: daemon`
    with a `command`); the agent's supervisor runs that instead of Tether's proxy."""
    return not (proxy_config.get("exec_mode", "daemon") == "daemon" and proxy_config.get("command"))


def _default_sidecar_checks(sidecar: ServiceDefinition, parent: dict[str, Any]) -> list[CheckDefinition]:
    alias = CheckDefinition(Name=f"Connect Sidecar Aliasing {parent['ID']}", AliasService=parent["ID"])
    config = sidecar.Proxy.Config if sidecar.Proxy else {}
    if runs_tether_proxy(config):
        listening = CheckDefinition(
            Name=SIDECAR_LISTENING_CHECK, TTL=SIDECAR_LISTENING_TTL,
            Notes="passed by the sidecar proxy itself while its public listener is open")
    else:
        bind = _bind_address(sidecar)
        if bind and ipaddress.ip_address(bind).is_unspecified:  # every interface: probe loopback
            bind = "127.0.0.1" if ipaddress.ip_address(bind).version == 4 else "::1"
        address = bind or sidecar.Address or "127.0.0.1"
        port = config.get("bind_port") or sidecar.Port
        host = f"[{address}]" if ":" in address else address
        listening = CheckDefinition(Name=SIDECAR_LISTENING_CHECK, TCP=f"{host}:{port}", Interval=SIDECAR_CHECK_INTERVAL)
    return [listening, alias]


def format_service(d: ServiceDefinition, *, node: str, datacenter: str) -> dict[str, Any]:
    """The AgentService document for one instance."""
    doc: dict[str, Any] = {
        "Node": node,
        "ID": d.ID or d.Name,
        "Service": d.Name,
        "Tags": list(d.Tags),
        "Meta": dict(d.Meta),
        "Port": d.Port,
        "Address": d.Address,
        "SocketPath": d.SocketPath,
        "TaggedAddresses": d.TaggedAddresses,
        "Weights": d.Weights or {"Passing": 1, "Warning": 1},
        "EnableTagOverride": d.EnableTagOverride,
        "Kind": d.Kind,
        "Datacenter": datacenter,
        "Namespace": d.Namespace or DEFAULT_NAMESPACE,
    }
    if d.Proxy is not None:
        doc["Proxy"] = format_proxy(d.Proxy.model_dump())
    if d.Connect is not None and d.Connect.Native:
        doc["Connect"] = {"Native": True}
    return doc


def format_proxy(proxy: dict[str, Any]) -> dict[str, Any]:
    """Drop empty optional fields so the JSON reads like Consul's."""
    out = {k: v for k, v in proxy.items() if v not in ("", None, {}, ()) or k in ("Config", "Upstreams")}
    out["Upstreams"] = [
        {k: v for k, v in (u.model_dump() if isinstance(u, Upstream) else u).items() if v not in ("", {}, False)}
        for u in proxy.get("Upstreams", ())
    ]
    out.setdefault("Config", {})
    if not out.get("Mode"):
        out["Mode"] = "direct"
    return out


def format_check(c: CheckDefinition, service: dict[str, Any] | None, node: str, i: int, n: int) -> dict[str, Any]:
    """The HealthCheck document. IDs follow Consul: service:<id>, or service:<id>:<n> when several."""
    if service is not None:
        default_id = f"service:{service['ID']}" + (f":{i + 1}" if n > 1 else "")
        default_name = f"Service '{service['Service']}' check"
    else:
        default_id, default_name = c.Name, c.Name
    definition = {
        k: v for k, v in c.model_dump().items()
        if k not in ("CheckID", "Name", "Notes", "Status", "ServiceID") and v not in ("", {}, 0, False)
    }
    return {
        "Node": node,
        "CheckID": c.CheckID or default_id,
        "Name": c.Name or default_name,
        "Status": c.Status or "critical",
        "Notes": c.Notes,
        "Output": "",
        "ServiceID": service["ID"] if service else c.ServiceID,
        "ServiceName": service["Service"] if service else "",
        "ServiceTags": service["Tags"] if service else [],
        "Type": c.type,
        "Definition": definition,
    }
