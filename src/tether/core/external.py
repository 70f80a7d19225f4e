"""External-service registry: the model, its validation, an indexed snapshot, and the egress decision.

Pure core code. The YAML/JSON loader (core/external_yaml.py) turns documents into these
values; the control plane stores them; proxies build one `EgressSnapshot` per registry
revision and call `decide_egress` for every outbound connection that is not to a mesh
service. Only the proxy turns a denial into a closed connection and an access-log line.

Matching follows the order Envoy uses for Istio's listeners (destination port, then
destination IP, then SNI), with Istio's catch-all last:
  1. an entry whose `addresses` (CIDRs) contain the original destination IP on that
     port; the longest prefix wins (TLS ports additionally need the SNI to match a host);
  2. a TLS port whose host pattern matches the SNI; the most specific host wins;
  3. a TCP port of an entry without addresses: it owns that port for every IP.
Field names in messages are the YAML names, because that is what people write.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from tether.core.errors import InvalidInput
from tether.core.hostmatch import (
    HostIndex,
    host_problem,
    host_specificity,
    is_wildcard,
    match_host,
    normalize_runtime_name,
)


class Protocol(StrEnum):
    TCP = "TCP"
    TLS = "TLS"  # route on SNI without terminating


class Resolution(StrEnum):
    NONE = "NONE"  # forward to the original destination IP
    STATIC = "STATIC"  # forward to the listed endpoint IPs
    DNS = "DNS"  # resolve the endpoints' (or the hosts') names


class TlsMode(StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"


class OutboundMode(StrEnum):
    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


class TargetKind(StrEnum):
    ORIGINAL_DST = "ORIGINAL_DST"
    STATIC = "STATIC"
    DNS = "DNS"


MESH_EXTERNAL = "MESH_EXTERNAL"
#: Istio's ServiceEntry limit on hosts, kept so Istio documents behave the same.
MAX_HOSTS = 256
PROTOCOL_HINTS = frozenset({"postgres"})
_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str
    protocol: Protocol = Protocol.TCP
    target_port: int | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # an IP; a DNS name only with resolution DNS
    ports: tuple[tuple[str, int], ...] = ()  # port name -> number on this endpoint
    weight: int | None = None

    def port_for(self, port: ServicePort) -> int:
        for name, number in self.ports:
            if name == port.name:
                return number
        return port.target_port or port.number


@dataclass(frozen=True, slots=True)
class TlsOrigination:
    mode: TlsMode = TlsMode.DISABLE
    ca_certificates: str | None = None  # file path; None = the system trust store
    client_certificate: str | None = None
    private_key: str | None = None  # path only: key material never enters the model
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExternalService:
    name: str
    hosts: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    addresses: tuple[str, ...] = ()  # CIDRs; a bare IP means /32 or /128
    resolution: Resolution = Resolution.NONE
    endpoints: tuple[Endpoint, ...] = ()
    location: str = MESH_EXTERNAL
    tls: TlsOrigination = TlsOrigination()
    protocol_hint: str | None = None  # "postgres": answer/perform SSLRequest around origination
    allowed_sources: tuple[str, ...] = ("*",)
    #: Mesh service name of the egress gateway this traffic must leave through (None: the
    #: sidecar connects directly). The gateway itself ignores it: it is the exit.
    egress_gateway: str | None = None

    def allows_source(self, source: str) -> bool:
        return "*" in self.allowed_sources or source in self.allowed_sources

    def origination_sni(self) -> str | None:
        """SNI (and verified name) for originated TLS: tls.sni, else the first exact host."""
        if self.tls.sni:
            return self.tls.sni
        return next((h for h in self.hosts if not is_wildcard(h)), None)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Mesh-wide mode plus per-source-service overrides. ALLOW_ANY is Istio's default."""

    mode: OutboundMode = OutboundMode.ALLOW_ANY
    overrides: tuple[tuple[str, OutboundMode], ...] = ()

    def mode_for(self, service: str) -> OutboundMode:
        for name, mode in self.overrides:
            if name == service:
                return mode
        return self.mode


@dataclass(frozen=True, slots=True)
class EgressTarget:
    """Where to send an allowed connection and how."""

    kind: TargetKind
    addresses: tuple[tuple[str, int], ...]  # (IP, or DNS name to resolve, port) in order of preference
    tls: TlsOrigination | None = None  # originate TLS with these settings; None = forward bytes as-is
    sni: str | None = None  # SNI to send when originating


@dataclass(frozen=True, slots=True)
class EgressDecision:
    allowed: bool
    entry: ExternalService | None
    target: EgressTarget | None
    reason: str


# ---------------------------------------------------------------- validation


def _enum_problem(enum: type[StrEnum], value: object, where: str) -> str | None:
    if value in enum.__members__.values():
        return None
    return f"{where} {value!r} is not supported; use one of {', '.join(enum.__members__)}"


def _port_problems(ports: tuple[ServicePort, ...]) -> list[str]:
    out: list[str] = []
    if not ports:
        out.append("ports: at least one port is required")
    numbers: set[int] = set()
    names: set[str] = set()
    for i, p in enumerate(ports):
        where = f"ports[{i}]"
        if not isinstance(p.number, int) or not 1 <= p.number <= 65535:
            out.append(f"{where}.number {p.number!r} must be in 1..65535")
        elif p.number in numbers:
            out.append(f"{where}.number {p.number} is listed twice")
        numbers.add(p.number)
        if not isinstance(p.name, str) or not p.name:
            out.append(f"{where}.name is required")
        elif p.name in names:
            out.append(f"{where}.name {p.name!r} is listed twice")
        names.add(p.name)
        if (bad := _enum_problem(Protocol, p.protocol, f"{where}.protocol")) is not None:
            out.append(bad)
        if p.target_port is not None and (not isinstance(p.target_port, int) or not 1 <= p.target_port <= 65535):
            out.append(f"{where}.targetPort {p.target_port!r} must be in 1..65535")
    return out


def _address_problems(svc: ExternalService) -> list[str]:
    out: list[str] = []
    for i, a in enumerate(svc.addresses):
        try:
            net = ipaddress.ip_network(a, strict=True)
        except (ValueError, TypeError):
            hint = "e.g. 203.0.113.0/24"
            try:
                hint = f"host bits are set: did you mean {ipaddress.ip_network(a, strict=False)}?"
            except (ValueError, TypeError):
                pass
            out.append(f"addresses[{i}] {a!r} is not a valid IP address or CIDR ({hint})")
            continue
        if svc.resolution == Resolution.DNS and net.num_addresses > 1:
            out.append(f"addresses[{i}] {a!r}: CIDR ranges need resolution NONE or STATIC, not DNS")
    return out


def _endpoint_problems(svc: ExternalService) -> list[str]:
    out: list[str] = []
    if svc.resolution == Resolution.NONE and svc.endpoints:
        out.append("endpoints are not allowed with resolution NONE (traffic goes to the original "
                   "destination); use resolution STATIC or DNS, or drop the endpoints")
    if svc.resolution == Resolution.STATIC and not svc.endpoints:
        out.append("resolution STATIC needs at least one endpoint")
    port_names = {p.name for p in svc.ports}
    for i, ep in enumerate(svc.endpoints):
        where = f"endpoints[{i}]"
        try:
            ipaddress.ip_address(ep.address)
        except (ValueError, TypeError):
            if svc.resolution != Resolution.DNS:
                out.append(f"{where}.address {ep.address!r} must be an IP address with resolution "
                           f"{svc.resolution} (DNS names need resolution DNS)")
            elif (bad := host_problem(ep.address, allow_wildcard=False)) is not None:
                out.append(f"{where}.address: {bad}")
        for name, number in ep.ports:
            if name not in port_names:
                out.append(f"{where}.ports: {name!r} names no port of this service ({', '.join(sorted(port_names))})")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                out.append(f"{where}.ports.{name} {number!r} must be in 1..65535")
        if ep.weight is not None and (not isinstance(ep.weight, int) or not 1 <= ep.weight <= 2**32 - 1):
            out.append(f"{where}.weight {ep.weight!r} must be a positive integer")
    return out


def _tls_problems(svc: ExternalService) -> list[str]:
    t, out = svc.tls, []
    if (bad := _enum_problem(TlsMode, t.mode, "tls.mode")) is not None:
        return [bad]
    if t.mode == TlsMode.DISABLE:
        if t != TlsOrigination():
            out.append("tls settings are given but tls.mode is DISABLE; set mode SIMPLE or MUTUAL, or drop them")
    elif t.mode == TlsMode.MUTUAL and not (t.client_certificate and t.private_key):
        out.append("tls.mode MUTUAL needs both tls.clientCertificate and tls.privateKey")
    elif t.mode == TlsMode.SIMPLE and (t.client_certificate or t.private_key):
        out.append("tls.clientCertificate/privateKey need tls.mode MUTUAL (SIMPLE sends no client certificate)")
    if t.sni is not None and (bad := host_problem(t.sni, allow_wildcard=False)) is not None:
        out.append(f"tls.sni: {bad}")
    if t.mode != TlsMode.DISABLE:
        tls_ports = [str(p.number) for p in svc.ports if p.protocol == Protocol.TLS]
        if tls_ports:
            out.append(f"tls.mode {t.mode} originates TLS, but port(s) {', '.join(tls_ports)} are protocol TLS "
                       "(the application already speaks TLS); use protocol TCP for originated ports")
        if svc.origination_sni() is None:
            out.append("TLS origination needs a name to send as SNI and verify: set tls.sni or an exact host")
    if svc.protocol_hint is not None:
        if svc.protocol_hint not in PROTOCOL_HINTS:
            out.append(f"protocolHint {svc.protocol_hint!r} is not supported; use one of {', '.join(sorted(PROTOCOL_HINTS))}")
        elif t.mode == TlsMode.DISABLE:
            out.append(f"protocolHint {svc.protocol_hint} is for TLS origination; set tls.mode SIMPLE or MUTUAL")
    return out


def external_service_problems(svc: ExternalService, prefix: str | None = None) -> list[str]:
    """Every problem with one entry, each naming the field and value; [] when valid.

    Each message starts with `prefix` (default: "external service 'NAME': ").
    """
    out: list[str] = []
    if not isinstance(svc.name, str) or not _NAME.fullmatch(svc.name):
        out.append(f"name {svc.name!r} must be lowercase letters, digits, '-' and '.'")
    if (bad := _enum_problem(Resolution, svc.resolution, "resolution")) is not None:
        out.append(bad)
    if svc.location != MESH_EXTERNAL:
        out.append(f"location {svc.location!r} is not supported; external services are MESH_EXTERNAL "
                   "(register mesh workloads as services instead)")
    if not svc.hosts and not svc.addresses:
        out.append("hosts: at least one host (or, for TCP, an address) is required")
    if len(svc.hosts) > MAX_HOSTS:
        out.append(f"hosts: {len(svc.hosts)} hosts given; at most {MAX_HOSTS}")
    for i, h in enumerate(svc.hosts):
        if (bad := host_problem(h)) is not None:
            out.append(f"hosts[{i}]: {bad}")
        elif svc.resolution == Resolution.DNS and is_wildcard(h):
            out.append(f"hosts[{i}] {h!r} is a wildcard, which resolution DNS cannot resolve; use resolution "
                       "NONE (or STATIC with endpoints) for wildcard hosts")
    out += _port_problems(svc.ports)
    if not svc.hosts and any(p.protocol == Protocol.TLS for p in svc.ports):
        out.append("a TLS port is matched by SNI, so the service needs hosts")
    out += _address_problems(svc) + _endpoint_problems(svc) + _tls_problems(svc)
    if not svc.allowed_sources:
        out.append("allowedSources is empty, so no service could use this entry; use ['*'] for every service")
    for s in svc.allowed_sources:
        if s != "*" and (not isinstance(s, str) or not _NAME.fullmatch(s)):
            out.append(f"allowedSources: {s!r} is not a service name or '*'")
    if svc.egress_gateway is not None and (not isinstance(svc.egress_gateway, str)
                                           or not _NAME.fullmatch(svc.egress_gateway)):
        out.append(f"egressGateway {svc.egress_gateway!r} is not a service name (the gateway's mesh service, "
                   "e.g. egress-gateway)")
    head = f"external service {svc.name!r}: " if prefix is None else prefix
    return [head + p for p in out]


def registry_problems(services: Iterable[ExternalService]) -> list[str]:
    """Conflicts between entries: duplicate names, and two entries claiming the same traffic."""
    out: list[str] = []
    seen: dict[str, str] = {}
    claims: dict[tuple[object, ...], str] = {}
    for svc in services:
        if svc.name in seen:
            out.append(f"external service {svc.name!r} is defined twice")
        seen[svc.name] = svc.name
        for p in svc.ports:
            if p.protocol == Protocol.TLS:
                keys = [(p.number, "host", h.lower(), a) for h in svc.hosts for a in (svc.addresses or ("",))]
            elif svc.addresses:
                keys = [(p.number, "cidr", _canon(a)) for a in svc.addresses]
            else:
                keys = [(p.number, "any")]
            for key in keys:
                if (other := claims.setdefault(key, svc.name)) != svc.name:
                    both = f"external services {other!r} and {svc.name!r} both claim"
                    # Istio binds 0.0.0.0:<port> for both port-only entries and one silently wins.
                    out.append(f"{both} TCP port {p.number} for every address (neither has addresses); give them "
                               "addresses (CIDRs) or merge them" if key[1] == "any" else
                               f"{both} {key[2]} on TCP port {p.number}; merge them" if key[1] == "cidr" else
                               f"{both} host {key[2]!r} on TLS port {p.number}; merge them")
    return out


def _canon(address: str) -> str:
    try:
        return str(ipaddress.ip_network(address, strict=False))
    except (ValueError, TypeError):
        return str(address)


def policy_problems(policy: OutboundPolicy) -> list[str]:
    out: list[str] = []
    if (bad := _enum_problem(OutboundMode, policy.mode, "outbound policy mode")) is not None:
        out.append(bad)
    names: set[str] = set()
    for name, mode in policy.overrides:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            out.append(f"outbound policy: service {name!r} is not a valid service name")
        elif name in names:
            out.append(f"outbound policy: service {name!r} is listed twice")
        names.add(name)
        if (bad := _enum_problem(OutboundMode, mode, f"outbound policy mode for {name!r}")) is not None:
            out.append(bad)
    return out


def raise_problems(problems: list[str], what: str) -> None:
    """Raise one InvalidInput listing every problem (also kept as `.problems`), if any."""
    if not problems:
        return
    head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {what}:"
    err = InvalidInput("\n  - ".join([head, *problems]))
    err.problems = tuple(problems)  # type: ignore[attr-defined]
    raise err


# ---------------------------------------------------------------- snapshot and decision

_Claim = tuple[ExternalService, ServicePort]


class _PortIndex:
    """Everything registered on one port number, indexed for the three matching steps."""

    __slots__ = ("cidrs", "sni", "any_ip")

    def __init__(self) -> None:
        # (ip version, prefix length) -> {network as int >> host bits: claims}, longest prefix first
        self.cidrs: dict[tuple[int, int], dict[int, list[_Claim]]] = {}
        self.sni: HostIndex[_Claim] = HostIndex(())
        self.any_ip: _Claim | None = None


@dataclass(frozen=True, slots=True)
class EgressSnapshot:
    """An immutable, validated registry plus its indexes. Build once per registry revision."""

    services: tuple[ExternalService, ...]
    policy: OutboundPolicy
    _ports: Mapping[int, _PortIndex] = field(repr=False, compare=False)

    @classmethod
    def build(cls, services: Iterable[ExternalService], policy: OutboundPolicy = OutboundPolicy()) -> EgressSnapshot:
        """Validate everything (all problems at once, InvalidInput) and index it."""
        services = tuple(services)
        problems = [p for s in services for p in external_service_problems(s)]
        problems += registry_problems(services) + policy_problems(policy)
        raise_problems(problems, "the external service registry")
        ports: dict[int, _PortIndex] = {}
        sni_pairs: dict[int, list[tuple[str, _Claim]]] = {}
        for svc in services:
            for p in svc.ports:
                idx = ports.setdefault(p.number, _PortIndex())
                if svc.addresses:
                    for a in svc.addresses:
                        net = ipaddress.ip_network(a, strict=False)
                        table = idx.cidrs.setdefault((net.version, net.prefixlen), {})
                        table.setdefault(int(net.network_address) >> (net.max_prefixlen - net.prefixlen), []).append(
                            (svc, p))
                elif p.protocol == Protocol.TLS:
                    sni_pairs.setdefault(p.number, []).extend((h.lower(), (svc, p)) for h in svc.hosts)
                else:
                    idx.any_ip = (svc, p)
        for number, pairs in sni_pairs.items():
            ports[number].sni = HostIndex(pairs)
        for idx in ports.values():
            idx.cidrs = dict(sorted(idx.cidrs.items(), key=lambda kv: -kv[0][1]))
        return cls(services, policy, MappingProxyType(ports))

    def match(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int,
              sni: str | None) -> tuple[ExternalService, ServicePort, str] | None:
        """(entry, port, how it matched) by the three steps in the module docstring, or None."""
        idx = self._ports.get(port)
        if idx is None:
            return None
        if ip is not None:  # step 1: addresses, longest prefix first
            for (version, plen), table in idx.cidrs.items():
                if version != ip.version:
                    continue
                claims = table.get(int(ip) >> (ip.max_prefixlen - plen))
                if claims and (hit := _pick_cidr_claim(claims, sni)) is not None:
                    net = ipaddress.ip_network((int(ip) >> (ip.max_prefixlen - plen) << (ip.max_prefixlen - plen),
                                                plen))
                    return hit[0], hit[1], f"address {net}"
        if sni is not None and (found := idx.sni.lookup(sni)) is not None:  # step 2: SNI
            pattern, claims = found
            return claims[0][0], claims[0][1], f"host {pattern}"
        if idx.any_ip is not None:  # step 3: the port's catch-all TCP entry
            return idx.any_ip[0], idx.any_ip[1], f"port {port}"
        return None


def _pick_cidr_claim(claims: list[_Claim], sni: str | None) -> _Claim | None:
    best: tuple[tuple[int, int, int], _Claim] | None = None
    for svc, p in claims:
        if p.protocol == Protocol.TCP:
            return svc, p
        for h in svc.hosts:
            if sni is not None and match_host(h.lower(), sni):
                key = host_specificity(h.lower())
                if best is None or key > best[0]:
                    best = (key, (svc, p))
    return best[1] if best else None


def _describe(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int, sni: str | None) -> str:
    """What was asked for, as the access log shows it: the SNI for TLS, else IP:port."""
    if sni is not None:
        return f"sni={sni}:{port}"
    if ip is None:
        return f"<no destination>:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _target(svc: ExternalService, p: ServicePort, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
            sni: str | None, route_on_sni: bool = False) -> EgressTarget | None:
    tls = svc.tls if svc.tls.mode != TlsMode.DISABLE else None
    out_sni = svc.origination_sni() if tls else None
    port = p.target_port or p.number
    if svc.resolution == Resolution.STATIC:
        addrs = tuple((e.address, e.port_for(p)) for e in svc.endpoints)
        return EgressTarget(TargetKind.STATIC, addrs, tls, out_sni)
    if svc.resolution == Resolution.DNS:
        if svc.endpoints:
            addrs = tuple((e.address, e.port_for(p)) for e in svc.endpoints)
        elif sni is not None and p.protocol == Protocol.TLS:
            addrs = ((sni, port),)  # matched an exact host (DNS forbids wildcards)
        else:
            addrs = tuple((h.lower(), port) for h in svc.hosts)
        return EgressTarget(TargetKind.DNS, addrs, tls, out_sni)
    if ip is not None and not (route_on_sni and sni is not None and p.protocol == Protocol.TLS):
        return EgressTarget(TargetKind.ORIGINAL_DST, ((str(ip), port),), tls, out_sni)  # NONE: where it was going
    if sni is not None:
        # No original IP (e.g. at the egress gateway, which sees only the SNI): resolve the
        # SNI itself. This is what lets a wildcard entry route any host under it.
        return EgressTarget(TargetKind.DNS, ((sni, port),), tls, out_sni)
    return None


def decide_egress(snapshot: EgressSnapshot, source_service: str, orig_dst_ip: str | None, orig_dst_port: int,
                  sni: str | None, *, route_on_sni: bool = False) -> EgressDecision:
    """May `source_service` open this outbound connection, to which entry, and where to send it?

    `orig_dst_ip` is the address the application dialled (None where it is unknown);
    `sni` is the ClientHello's server name (None for plain TCP). `route_on_sni` is for
    the egress gateway: a TLS port with resolution NONE then goes to the SNI's own
    address, never to the IP the client claims it dialled, so a workload cannot name an
    allowed host and reach another address.
    """
    # 1. Normalise what was asked for. A mapped IPv4 address is the IPv4 address it carries.
    ip = None
    if orig_dst_ip is not None:
        try:
            ip = ipaddress.ip_address(orig_dst_ip)
        except ValueError:
            raise InvalidInput(f"orig_dst_ip {orig_dst_ip!r} is not an IP address") from None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    name = normalize_runtime_name(sni) if sni is not None else None
    what = _describe(ip, orig_dst_port, name if sni is None or name is not None else ascii(sni)[:80])
    # 2. Match the registry (an SNI that is no host name can only match by address or port).
    found = snapshot.match(ip, orig_dst_port, name)
    mode = snapshot.policy.mode_for(source_service)
    if found is None:
        if mode == OutboundMode.REGISTRY_ONLY:
            return EgressDecision(False, None, None, f"REGISTRY_ONLY: no external service matches {what}")
        if ip is not None and not (route_on_sni and name is not None):
            target = EgressTarget(TargetKind.ORIGINAL_DST, ((str(ip), orig_dst_port),))
        elif name is not None:
            target = EgressTarget(TargetKind.DNS, ((name, orig_dst_port),))
        else:
            return EgressDecision(False, None, None, f"ALLOW_ANY: nowhere to forward {what}: no original "
                                  "destination address and no SNI")
        return EgressDecision(True, None, target, f"ALLOW_ANY: no external service matches {what}; passthrough")
    svc, port, how = found
    # 3. Per-source restriction: the most specific entry speaks for its traffic, whatever the mode.
    if not svc.allows_source(source_service):
        return EgressDecision(False, svc, None, f"external service {svc.name!r} matches {what} but does not allow "
                              f"source {source_service!r} (allowed: {', '.join(svc.allowed_sources)})")
    # 4. Where to send it.
    target = _target(svc, port, ip, name, route_on_sni)
    if target is None:
        return EgressDecision(False, svc, None, f"external service {svc.name!r} matches {what} but has resolution "
                              "NONE and no original destination is known; give it endpoints (STATIC) or use DNS")
    return EgressDecision(True, svc, target, f"external service {svc.name!r} matches {what} by {how}")
