"""External-service registry: the indexed snapshot and the egress decision (model in
core/external_model.py, validation in core/external_validate.py; both re-exported here).

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tether.core.errors import InvalidInput
from tether.core.external_model import (  # re-exported: callers import the registry from here
    MAX_HOSTS, MESH_EXTERNAL, PROTOCOL_HINTS, EgressDecision, EgressTarget, Endpoint, ExternalService,
    OutboundMode, OutboundPolicy, Protocol, Resolution, ServicePort, TargetKind, TlsMode, TlsOrigination,
)
from tether.core.external_validate import (  # re-exported
    external_service_problems, policy_problems, raise_problems, registry_problems,
)
from tether.core.hostmatch import HostIndex, host_specificity, match_host, normalize_runtime_name

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


__all__ = [
    "EgressDecision",
    "EgressSnapshot",
    "EgressTarget",
    "Endpoint",
    "ExternalService",
    "MAX_HOSTS",
    "MESH_EXTERNAL",
    "OutboundMode",
    "OutboundPolicy",
    "PROTOCOL_HINTS",
    "Protocol",
    "Resolution",
    "ServicePort",
    "TargetKind",
    "TlsMode",
    "TlsOrigination",
    "decide_egress",
    "external_service_problems",
    "policy_problems",
    "raise_problems",
    "registry_problems",
]
