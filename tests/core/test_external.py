"""External-service registry (core/external.py): validation, matching order, targets,
outbound policy and the reasons an access log will print. RFC 5737 addresses as data."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import InvalidInput
from tether.core.external import (
    EgressSnapshot,
    EgressTarget,
    Endpoint,
    ExternalService,
    OutboundMode,
    OutboundPolicy,
    Protocol,
    Resolution,
    ServicePort,
    TargetKind,
    TlsMode,
    TlsOrigination,
    decide_egress,
)
from tether.core.hostmatch import host_specificity, match_host

TCP_PG = (ServicePort(5432, "tcp-pg"),)
TLS_443 = (ServicePort(443, "tls", Protocol.TLS),)
REGISTRY_ONLY = OutboundPolicy(OutboundMode.REGISTRY_ONLY)

PG = ExternalService("pg", hosts=("db.example.com",), addresses=("203.0.113.0/24",), ports=TCP_PG)
PG_PRIMARY = ExternalService("pg-primary", hosts=("primary.example.com",), addresses=("203.0.113.16/28",),
                             ports=TCP_PG)
PAYMENTS = ExternalService("payments", hosts=("*.payments.example",), ports=TLS_443, allowed_sources=("web",))
API = ExternalService("api", hosts=("api.example.com",), ports=TLS_443, resolution=Resolution.DNS)
EXAMPLE = ExternalService("example-wild", hosts=("*.example.com",), ports=TLS_443)
DOTCOM = ExternalService("dotcom", hosts=("*.com",), ports=TLS_443)
REDIS_ANY = ExternalService("redis-any", hosts=("redis.example.net",), ports=(ServicePort(6379, "tcp"),))


def snapshot(*services: ExternalService, policy: OutboundPolicy = REGISTRY_ONLY) -> EgressSnapshot:
    return EgressSnapshot.build(services, policy)


REGISTRY = snapshot(PG, PG_PRIMARY, PAYMENTS, API, EXAMPLE, DOTCOM, REDIS_ANY)


@pytest.mark.parametrize(("ip", "port", "sni", "entry", "how"), [
    ("203.0.113.9", 5432, None, "pg", "address 203.0.113.0/24"),
    ("203.0.113.20", 5432, None, "pg-primary", "address 203.0.113.16/28"),  # longest prefix wins
    ("::ffff:203.0.113.9", 5432, None, "pg", "address 203.0.113.0/24"),  # dual-stack socket form
    ("198.51.100.7", 443, "api.example.com", "api", "host api.example.com"),  # exact beats wildcard
    ("198.51.100.7", 443, "www.example.com", "example-wild", "host *.example.com"),
    ("198.51.100.7", 443, "a.b.example.com", "example-wild", "host *.example.com"),  # one or more labels
    ("198.51.100.7", 443, "shop.com", "dotcom", "host *.com"),
    ("198.51.100.7", 443, "API.Example.COM.", "api", "host api.example.com"),  # SNI is case-insensitive
    ("198.51.100.99", 6379, None, "redis-any", "port 6379"),  # no addresses: owns the port for every IP
    ("2001:db8::5", 6379, None, "redis-any", "port 6379"),
])
def test_matching_order(ip: str, port: int, sni: str | None, entry: str, how: str) -> None:
    decision = decide_egress(REGISTRY, "web", ip, port, sni)
    assert decision.allowed and decision.entry is not None and decision.entry.name == entry
    assert decision.reason.endswith(f"by {how}")


@pytest.mark.parametrize(("ip", "port", "sni", "reason"), [
    ("198.51.100.7", 443, "evil.example", "REGISTRY_ONLY: no external service matches sni=evil.example:443"),
    ("198.51.100.7", 5432, None, "REGISTRY_ONLY: no external service matches 198.51.100.7:5432"),
    ("2001:db8::1", 5432, None, "REGISTRY_ONLY: no external service matches [2001:db8::1]:5432"),
    ("203.0.113.9", 5433, None, "REGISTRY_ONLY: no external service matches 203.0.113.9:5433"),
    ("198.51.100.7", 443, None, "REGISTRY_ONLY: no external service matches 198.51.100.7:443"),
    ("198.51.100.7", 443, "example.org", "REGISTRY_ONLY: no external service matches sni=example.org:443"),
    ("198.51.100.7", 443, "bad name\n", "REGISTRY_ONLY: no external service matches sni='bad name\\n':443"),
])
def test_registry_only_names_what_was_blocked(ip: str, port: int, sni: str | None, reason: str) -> None:
    decision = decide_egress(REGISTRY, "web", ip, port, sni)
    assert (decision.allowed, decision.entry, decision.target, decision.reason) == (False, None, None, reason)


def test_allow_any_passes_unknown_destinations_through() -> None:
    registry = snapshot(PG, policy=OutboundPolicy())
    decision = decide_egress(registry, "web", "198.51.100.7", 443, "unknown.example")
    assert decision.allowed and decision.entry is None
    assert decision.target == EgressTarget(TargetKind.ORIGINAL_DST, (("198.51.100.7", 443),))
    assert decision.reason.startswith("ALLOW_ANY: no external service matches sni=unknown.example:443")
    at_gateway = decide_egress(registry, "web", None, 443, "unknown.example")
    assert at_gateway.target == EgressTarget(TargetKind.DNS, (("unknown.example", 443),))
    nowhere = decide_egress(registry, "web", None, 443, None)
    assert not nowhere.allowed and "nowhere to forward" in nowhere.reason


def test_per_source_restriction_applies_in_every_mode() -> None:
    for policy in (REGISTRY_ONLY, OutboundPolicy()):
        registry = snapshot(PAYMENTS, policy=policy)
        assert decide_egress(registry, "web", "198.51.100.7", 443, "api.payments.example").allowed
        denied = decide_egress(registry, "batch", "198.51.100.7", 443, "api.payments.example")
        assert not denied.allowed and denied.entry == PAYMENTS
        assert denied.reason == ("external service 'payments' matches sni=api.payments.example:443 but does not "
                                 "allow source 'batch' (allowed: web)")


def test_per_service_override_of_the_mesh_mode() -> None:
    policy = OutboundPolicy(OutboundMode.REGISTRY_ONLY, (("legacy", OutboundMode.ALLOW_ANY),))
    registry = snapshot(PG, policy=policy)
    assert not decide_egress(registry, "web", "198.51.100.7", 80, None).allowed
    assert decide_egress(registry, "legacy", "198.51.100.7", 80, None).allowed
    relaxed = OutboundPolicy(OutboundMode.ALLOW_ANY, (("batch", OutboundMode.REGISTRY_ONLY),))
    assert relaxed.mode_for("batch") == OutboundMode.REGISTRY_ONLY and relaxed.mode_for("web") == OutboundMode.ALLOW_ANY


def test_targets_by_resolution() -> None:
    static = ExternalService("static", hosts=("db.example.org",), addresses=("192.0.2.10/32",),
                             ports=(ServicePort(5432, "pg", target_port=15432),), resolution=Resolution.STATIC,
                             endpoints=(Endpoint("192.0.2.20"), Endpoint("192.0.2.21", (("pg", 6432),))))
    dns_eps = ExternalService("dns-eps", hosts=("cache.example.org",), ports=(ServicePort(6380, "redis"),),
                              addresses=("192.0.2.30",), resolution=Resolution.DNS,
                              endpoints=(Endpoint("redis-a.example.org"),))
    dns_hosts = ExternalService("dns-hosts", hosts=("a.example.org", "b.example.org"), ports=(ServicePort(7000, "t"),),
                                resolution=Resolution.DNS)
    wild = ExternalService("wild", hosts=("*.example.net",), ports=TLS_443)
    registry = snapshot(static, dns_eps, dns_hosts, wild, API)
    assert decide_egress(registry, "web", "192.0.2.10", 5432, None).target == EgressTarget(
        TargetKind.STATIC, (("192.0.2.20", 15432), ("192.0.2.21", 6432)))
    assert decide_egress(registry, "web", "192.0.2.30", 6380, None).target == EgressTarget(
        TargetKind.DNS, (("redis-a.example.org", 6380),))
    assert decide_egress(registry, "web", "198.51.100.1", 7000, None).target == EgressTarget(
        TargetKind.DNS, (("a.example.org", 7000), ("b.example.org", 7000)))
    # DNS on a TLS port dials the SNI host (exact, since DNS forbids wildcards); NONE the original IP.
    assert decide_egress(registry, "web", "198.51.100.1", 443, "api.example.com").target == EgressTarget(
        TargetKind.DNS, (("api.example.com", 443),))
    assert decide_egress(registry, "web", "198.51.100.1", 443, "x.example.net").target == EgressTarget(
        TargetKind.ORIGINAL_DST, (("198.51.100.1", 443),))
    # At the egress gateway there is no original IP: a NONE wildcard entry resolves the SNI itself.
    assert decide_egress(registry, "web", None, 443, "deep.x.example.net").target == EgressTarget(
        TargetKind.DNS, (("deep.x.example.net", 443),))


def test_none_resolution_without_an_original_address_cannot_forward_tcp() -> None:
    decision = decide_egress(snapshot(PG, REDIS_ANY), "web", None, 6379, None)
    assert not decision.allowed and decision.entry == REDIS_ANY and "resolution NONE" in decision.reason


def test_tls_origination_target_carries_settings_and_sni() -> None:
    tls = TlsOrigination(TlsMode.MUTUAL, "/etc/tether/pg-ca.pem", "/etc/tether/client.pem", "/etc/tether/client.key")
    pg = ExternalService("pg-tls", hosts=("db.example.com",), addresses=("203.0.113.5",), ports=TCP_PG, tls=tls,
                         protocol_hint="postgres")
    target = decide_egress(snapshot(pg), "web", "203.0.113.5", 5432, None).target
    assert target == EgressTarget(TargetKind.ORIGINAL_DST, (("203.0.113.5", 5432),), tls, "db.example.com")
    named = ExternalService("pg-sni", addresses=("203.0.113.6",), ports=TCP_PG,
                            tls=TlsOrigination(TlsMode.SIMPLE, sni="pg.internal.example"))
    assert decide_egress(snapshot(named), "web", "203.0.113.6", 5432, None).target.sni == "pg.internal.example"  # type: ignore[union-attr]


def test_decide_refuses_a_malformed_original_address() -> None:
    with pytest.raises(InvalidInput, match="orig_dst_ip 'nope'"):
        decide_egress(REGISTRY, "web", "nope", 443, None)


# ---------------------------------------------------------------- validation


def problems_of(*services: ExternalService, policy: OutboundPolicy = OutboundPolicy()) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        EgressSnapshot.build(services, policy)
    return list(info.value.problems)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("service", "says"), [
    (ExternalService("w", hosts=("*.example.com",), ports=TLS_443, resolution=Resolution.DNS),
     "hosts[0] '*.example.com' is a wildcard, which resolution DNS cannot resolve"),
    (ExternalService("c", addresses=("203.0.113.5/24",), ports=TCP_PG),
     "addresses[0] '203.0.113.5/24' is not a valid IP address or CIDR (host bits are set: did you mean 203.0.113.0/24?)"),
    (ExternalService("c", addresses=("203.0.113.0/33",), ports=TCP_PG), "addresses[0] '203.0.113.0/33' is not a valid"),
    (ExternalService("c", addresses=("203.0.113.0/24",), ports=TCP_PG, resolution=Resolution.DNS, hosts=("a.example",)),
     "CIDR ranges need resolution NONE or STATIC"),
    (ExternalService("e", hosts=("a.example",), ports=TCP_PG, endpoints=(Endpoint("192.0.2.1"),)),
     "endpoints are not allowed with resolution NONE"),
    (ExternalService("e", hosts=("a.example",), ports=TCP_PG, resolution=Resolution.STATIC),
     "resolution STATIC needs at least one endpoint"),
    (ExternalService("e", hosts=("a.example",), ports=TCP_PG, resolution=Resolution.STATIC,
                     endpoints=(Endpoint("db.example"),)), "endpoints[0].address 'db.example' must be an IP address"),
    (ExternalService("e", hosts=("a.example",), ports=TCP_PG, resolution=Resolution.STATIC,
                     endpoints=(Endpoint("192.0.2.1", (("nope", 1),)),)), "endpoints[0].ports: 'nope' names no port"),
    (ExternalService("h", hosts=("*",), ports=TLS_443), "host '*' is not allowed"),
    (ExternalService("h", ports=TLS_443), "at least one host"),
    (ExternalService("h", addresses=("192.0.2.1",), ports=TLS_443), "a TLS port is matched by SNI"),
    (ExternalService("p", hosts=("a.example",)), "ports: at least one port is required"),
    (ExternalService("p", hosts=("a.example",), ports=(ServicePort(0, "x"),)), "ports[0].number 0 must be in 1..65535"),
    (ExternalService("p", hosts=("a.example",), ports=(ServicePort(80, "x", "HTTP"),)),  # type: ignore[arg-type]
     "ports[0].protocol 'HTTP' is not supported; use one of TCP, TLS"),
    (ExternalService("p", hosts=("a.example",), ports=(ServicePort(80, "x"), ServicePort(81, "x"))),
     "ports[1].name 'x' is listed twice"),
    (ExternalService("l", hosts=("a.example",), ports=TCP_PG, location="MESH_INTERNAL"),
     "location 'MESH_INTERNAL' is not supported"),
    (ExternalService("BadName", hosts=("a.example",), ports=TCP_PG), "name 'BadName' must be lowercase"),
    (ExternalService("t", hosts=("a.example",), ports=TCP_PG, tls=TlsOrigination(TlsMode.MUTUAL, client_certificate="c")),
     "MUTUAL needs both tls.clientCertificate and tls.privateKey"),
    (ExternalService("t", hosts=("a.example",), ports=TCP_PG, tls=TlsOrigination(TlsMode.SIMPLE, private_key="k")),
     "need tls.mode MUTUAL"),
    (ExternalService("t", hosts=("a.example",), ports=TCP_PG, tls=TlsOrigination(ca_certificates="/ca.pem")),
     "tls.mode is DISABLE"),
    (ExternalService("t", hosts=("a.example",), ports=TLS_443, tls=TlsOrigination(TlsMode.SIMPLE)),
     "port(s) 443 are protocol TLS"),
    (ExternalService("t", hosts=("*.example",), ports=TCP_PG, tls=TlsOrigination(TlsMode.SIMPLE)),
     "set tls.sni or an exact host"),
    (ExternalService("t", hosts=("a.example",), ports=TCP_PG, protocol_hint="postgres"),
     "protocolHint postgres is for TLS origination"),
    (ExternalService("t", hosts=("a.example",), ports=TCP_PG, protocol_hint="mysql"), "protocolHint 'mysql'"),
    (ExternalService("s", hosts=("a.example",), ports=TCP_PG, allowed_sources=()), "allowedSources is empty"),
])
def test_each_bad_field_is_named(service: ExternalService, says: str) -> None:
    problems = problems_of(service)
    assert any(says in p for p in problems), problems
    assert all(p.startswith(f"external service {service.name!r}: ") for p in problems)


def test_overlapping_port_only_tcp_entries_are_refused_naming_both() -> None:
    a = ExternalService("mysql-a", hosts=("a.example",), ports=(ServicePort(3306, "tcp"),))
    b = ExternalService("mysql-b", hosts=("b.example",), ports=(ServicePort(3306, "tcp"),))
    assert problems_of(a, b) == [
        "external services 'mysql-a' and 'mysql-b' both claim TCP port 3306 for every address (neither has "
        "addresses); give them addresses (CIDRs) or merge them"]
    # With addresses they no longer collide, and a distinct port never did.
    EgressSnapshot.build([a, ExternalService("mysql-b", hosts=("b.example",), addresses=("192.0.2.0/24",),
                                             ports=(ServicePort(3306, "tcp"),))])


def test_other_claims_and_duplicates() -> None:
    dup_cidr = [ExternalService(n, addresses=("192.0.2.0/24",), ports=TCP_PG) for n in ("x", "y")]
    assert "both claim 192.0.2.0/24 on TCP port 5432" in problems_of(*dup_cidr)[0]
    dup_host = [ExternalService(n, hosts=("api.example.com",), ports=TLS_443) for n in ("x", "y")]
    assert "both claim host 'api.example.com' on TLS port 443" in problems_of(*dup_host)[0]
    assert "defined twice" in problems_of(PG, PG)[0]


def test_every_problem_is_reported_at_once() -> None:
    bad = ExternalService("bad", hosts=("*.example.com", "x..y"), addresses=("nope",), ports=(ServicePort(70000, ""),),
                          resolution=Resolution.DNS)
    policy = OutboundPolicy("SOMETIMES", (("web", OutboundMode.ALLOW_ANY), ("web", "NEVER")))  # type: ignore[arg-type]
    problems = problems_of(bad, policy=policy)
    assert len(problems) >= 7
    with pytest.raises(InvalidInput, match=r"problems in the external service registry:\n  - "):
        EgressSnapshot.build([bad])


# ---------------------------------------------------------------- properties

_NETS = ["203.0.113.0/24", "203.0.113.0/28", "203.0.113.16/28", "198.51.100.0/24", "2001:db8::/32"]
_HOSTS = ["api.example.com", "*.example.com", "*.com", "db.example.org", "*.a.example.com"]
_SERVICES = [
    ExternalService(f"e{i}", hosts=(h,), addresses=(n,) if n else (), ports=(ServicePort(p, "p", proto),))
    for i, (h, n, p, proto) in enumerate([
        ("api.example.com", None, 443, Protocol.TLS), ("*.example.com", None, 443, Protocol.TLS),
        ("*.com", None, 443, Protocol.TLS), ("*.a.example.com", None, 443, Protocol.TLS),
        ("db.example.org", "203.0.113.0/24", 5432, Protocol.TCP), ("x.example.org", "203.0.113.16/28", 5432, Protocol.TCP),
        ("y.example.org", "198.51.100.0/24", 443, Protocol.TCP), ("z.example.org", "2001:db8::/32", 5432, Protocol.TCP),
        ("w.example.org", None, 6379, Protocol.TCP), ("*.example.com", "203.0.113.0/28", 443, Protocol.TLS),
    ])]
_ips = st.sampled_from(["203.0.113.1", "203.0.113.20", "203.0.113.200", "198.51.100.9", "192.0.2.1", "2001:db8::9"])
_snis = st.one_of(st.none(), st.sampled_from(["api.example.com", "x.a.example.com", "www.example.com", "shop.com",
                                              "example.org", "evil.example"]))


def reference_match(services: list[ExternalService], ip: str, port: int, sni: str | None) -> str | None:
    """The three matching steps written naively, as the specification."""
    addr = ipaddress.ip_address(ip)
    best: tuple[tuple[int, tuple[int, int, int]], str] | None = None
    for s in services:
        for p in s.ports:
            for n in s.addresses:
                net = ipaddress.ip_network(n)
                if p.number != port or addr.version != net.version or addr not in net:
                    continue
                hosts = [h for h in s.hosts if sni and match_host(h, sni)]
                if p.protocol == Protocol.TCP or hosts:
                    spec = max((host_specificity(h) for h in hosts), default=(9, 0, 0))
                    if best is None or (net.prefixlen, spec) > best[0]:
                        best = ((net.prefixlen, spec), s.name)
    if best:
        return best[1]
    tls = [(host_specificity(h), s.name) for s in services if not s.addresses for p in s.ports for h in s.hosts
           if p.number == port and p.protocol == Protocol.TLS and sni and match_host(h, sni)]
    if tls:
        return max(tls)[1]
    return next((s.name for s in services if not s.addresses for p in s.ports
                 if p.number == port and p.protocol == Protocol.TCP), None)


@given(st.permutations(_SERVICES), _ips, st.sampled_from([443, 5432, 6379, 80]), _snis)
def test_decision_agrees_with_the_reference_and_ignores_registry_order(
        services: list[ExternalService], ip: str, port: int, sni: str | None) -> None:
    decision = decide_egress(snapshot(*services), "web", ip, port, sni)
    in_order = decide_egress(snapshot(*_SERVICES), "web", ip, port, sni)
    assert decision == in_order
    assert (decision.entry.name if decision.entry else None) == reference_match(_SERVICES, ip, port, sni)
    assert decision.allowed == (decision.entry is not None)  # REGISTRY_ONLY: allowed only by an entry
