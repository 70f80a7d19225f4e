"""Validation of the external-service registry: every problem, with YAML field names (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from enum import StrEnum

from tether.core.errors import InvalidInput
from tether.core.external_model import (
    MAX_HOSTS, MESH_EXTERNAL, PROTOCOL_HINTS, ExternalService, OutboundMode, OutboundPolicy, Protocol,
    Resolution, ServicePort, TlsMode, TlsOrigination,
)
from tether.core.hostmatch import host_problem, is_wildcard

# Entry names are DNS-like (they appear in logs and metrics labels).
_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")


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
