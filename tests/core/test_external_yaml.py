"""Tether and Istio YAML for external services (core/external_yaml.py): the Istio patterns
from REFERENCE.md 3.1/3.3, strictness with paths, all-or-nothing, and format/parse round trips."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import InvalidInput, TooLarge
from tether.core.external import (
    EgressSnapshot,
    Endpoint,
    ExternalService,
    OutboundMode,
    OutboundPolicy,
    Protocol,
    Resolution,
    ServicePort,
    TlsMode,
    TlsOrigination,
    decide_egress,
    external_service_problems,
)
from tether.core.external_yaml import (
    MAX_INPUT_BYTES,
    ExternalConfig,
    format_external_yaml,
    parse_external_documents,
    parse_external_yaml,
)

TCP_BY_CIDR = """
apiVersion: {api}
kind: ServiceEntry
metadata:
  name: external-pg
  namespace: default
spec:
  hosts: [db.example.com]
  addresses: [203.0.113.0/24]
  ports:
  - number: 5432
    name: tcp
    protocol: TCP
  location: MESH_EXTERNAL
  resolution: NONE
"""

TLS_BY_SNI = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: apis}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wikipedia}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
"""


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        parse_external_yaml(text, source="in.yaml")
    return list(info.value.problems)  # type: ignore[attr-defined]


@pytest.mark.parametrize("api", ["networking.istio.io/v1alpha3", "networking.istio.io/v1beta1",
                                 "networking.istio.io/v1"])
def test_istio_tcp_by_cidr_in_every_api_version(api: str) -> None:
    config = parse_external_yaml(TCP_BY_CIDR.format(api=api))
    assert config == ExternalConfig((ExternalService(
        "external-pg", hosts=("db.example.com",), ports=(ServicePort(5432, "tcp", Protocol.TCP),),
        addresses=("203.0.113.0/24",), resolution=Resolution.NONE),), None)


def test_istio_tls_by_sni_exact_with_dns_and_wildcard_with_none() -> None:
    apis, wiki = parse_external_yaml(TLS_BY_SNI).services
    assert (apis.resolution, apis.ports[0].protocol) == (Resolution.DNS, Protocol.TLS)
    assert (wiki.hosts, wiki.ports[0].protocol) == (("*.wikipedia.org",), Protocol.TLS)  # HTTPS routes by SNI
    registry = EgressSnapshot.build([apis, wiki], OutboundPolicy(OutboundMode.REGISTRY_ONLY))
    assert decide_egress(registry, "web", "198.51.100.1", 443, "en.wikipedia.org").entry == wiki


def test_istio_static_endpoints_resolution_aliases_and_annotations() -> None:
    (svc,) = parse_external_yaml("""
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: redis
  annotations: {tether.dev/allowed-sources: "web, api", tether.dev/protocol-hint: postgres, other: kept-out}
spec:
  hosts: [Redis.Example.NET]
  addresses: [192.0.2.10/32]
  ports: [{number: 6379, name: redis, protocol: redis, targetPort: 6380}]
  resolution: STATIC
  exportTo: ["*"]
  endpoints:
  - {address: 192.0.2.11, ports: {redis: 7000}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: redis-tls}
spec:
  host: redis.example.net
  trafficPolicy: {tls: {mode: SIMPLE}}
""").services
    assert svc.hosts == ("redis.example.net",)
    assert svc.ports == (ServicePort(6379, "redis", Protocol.TCP, 6380),)
    assert svc.endpoints == (Endpoint("192.0.2.11", (("redis", 7000),)),)
    assert svc.allowed_sources == ("web", "api") and svc.protocol_hint == "postgres"
    for istio, tether in (("DNS_ROUND_ROBIN", Resolution.DNS), ("DYNAMIC_DNS", Resolution.NONE)):
        text = TLS_BY_SNI.split("---")[0].replace("resolution: DNS", f"resolution: {istio}")
        assert parse_external_yaml(text).services[0].resolution == tether


def test_destination_rule_tls_origination_is_folded_into_its_entry() -> None:
    text = TCP_BY_CIDR.format(api="networking.istio.io/v1") + """  subjectAltNames: [db.example.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pg-mtls}
spec:
  host: db.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 5432}
      tls:
        mode: MUTUAL
        caCertificates: /etc/tether/pg-ca.pem
        clientCertificate: /etc/tether/client.pem
        privateKey: /etc/tether/client.key
        sni: db.example.com
"""
    (svc,) = parse_external_yaml(text).services
    assert svc.tls == TlsOrigination(TlsMode.MUTUAL, "/etc/tether/pg-ca.pem", "/etc/tether/client.pem",
                                     "/etc/tether/client.key", "db.example.com", ("db.example.com",))


def test_tether_documents_and_outbound_policy() -> None:
    config = parse_external_yaml("""
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {name: orders-db}
spec:
  hosts: [orders-db.example.com]
  addresses: [203.0.113.5]
  ports: [{number: 5432, name: pg}]
  tls: {mode: SIMPLE, caCertificates: /etc/tether/pg-ca.pem}
  protocolHint: postgres
  allowedSources: [ratings]
---
apiVersion: tether.dev/v1
kind: OutboundPolicy
metadata: {name: mesh}
spec:
  mode: REGISTRY_ONLY
  services: {legacy-batch: ALLOW_ANY}
""")
    (svc,) = config.services
    assert svc.tls == TlsOrigination(TlsMode.SIMPLE, "/etc/tether/pg-ca.pem")
    assert (svc.protocol_hint, svc.allowed_sources) == ("postgres", ("ratings",))
    assert config.policy == OutboundPolicy(OutboundMode.REGISTRY_ONLY, (("legacy-batch", OutboundMode.ALLOW_ANY),))


def test_seed_scenario_ratings_reads_external_postgres_then_loses_it() -> None:
    text = TCP_BY_CIDR.format(api="networking.istio.io/v1")
    policy = OutboundPolicy(OutboundMode.REGISTRY_ONLY)
    with_entry = EgressSnapshot.build(parse_external_yaml(text).services, policy)
    assert decide_egress(with_entry, "ratings", "203.0.113.7", 5432, None).allowed
    without = EgressSnapshot.build([], policy)
    assert decide_egress(without, "ratings", "203.0.113.7", 5432, None).reason == (
        "REGISTRY_ONLY: no external service matches 203.0.113.7:5432")


@pytest.mark.parametrize(("text", "says"), [
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("    protocol: TCP", "    protocol: TCP\n    bogus: 1"),
     "in.yaml document 1 (ServiceEntry 'external-pg'): spec.ports[0].bogus: unknown field"),
    ("apiVersion: tether.dev/v1\nkind: ExternalService\nmetadata: {name: x, owner: me}\nspec: {}\n",
     "metadata.owner: unknown field"),
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("resolution: NONE", "resolution: STATIC\n  "
     "endpoints: [{address: 203.0.113.1, weight: 90}, {address: 203.0.113.2, weight: 10}]"),
     "spec.endpoints[0].weight: weighted balancing is not supported"),
    ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
     "kind Gateway of apiVersion networking.istio.io/v1 is not supported here"),
    ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {}\n", "OutboundPolicy"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "kind Deployment of apiVersion apps/v1"),
    ("apiVersion: tether.dev/v1\nkind: ServiceEntry\nmetadata: {name: d}\n", "kind ServiceEntry of apiVersion tether.dev/v1"),
    ("kind: ServiceEntry\nmetadata: {name: d}\n", "apiVersion: required field is missing"),
    ("- just a list\n", "document 1: expected a mapping, got list"),
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("resolution: NONE", "resolution: NONE\n  "
                                                             "workloadSelector: {labels: {app: pg}}"),
     "spec.workloadSelector: not supported: selects mesh workloads"),
    (TLS_BY_SNI.split("---")[0].replace("protocol: TLS", "protocol: HTTP"),
     "protocol HTTP is an L7 protocol, and without spec.addresses Istio tells such entries apart by the HTTP Host"),
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("MESH_EXTERNAL", "MESH_INTERNAL"),
     "MESH_INTERNAL is not supported"),
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("resolution: NONE", "resolution: DNS\n  exportTo: [.]"),
     "only ['*'] is accepted"),
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("203.0.113.0/24", "203.0.113.0/24x"),
     "addresses[0] '203.0.113.0/24x' is not a valid IP address or CIDR"),
    (TLS_BY_SNI.replace("resolution: NONE", "resolution: DNS"), "'*.wikipedia.org' is a wildcard, which resolution DNS"),
    (TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("  resolution: NONE", "  resolution: NONE\n  endpoints: "
                                                             "[{address: 203.0.113.5}]"),
     "endpoints are not allowed with resolution NONE"),
    ("apiVersion: tether.dev/v1\nkind: OutboundPolicy\nmetadata: {name: a}\nspec: {mode: DENY_ALL}\n",
     "spec.mode: 'DENY_ALL' is not supported; use one of ALLOW_ANY, REGISTRY_ONLY"),
    ("apiVersion: tether.dev/v1\nkind: OutboundPolicy\nmetadata: {name: a}\nspec: {mode: ALLOW_ANY}\n---\n"
     "apiVersion: tether.dev/v1\nkind: OutboundPolicy\nmetadata: {name: b}\nspec: {mode: ALLOW_ANY}\n",
     "2 OutboundPolicy documents; give exactly one"),
])
def test_bad_documents_name_document_and_path(text: str, says: str) -> None:
    found = problems(text)
    assert any(says in p for p in found), found


DR = """
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dr}}
spec:
  host: {host}
  trafficPolicy:
{policy}
"""


@pytest.mark.parametrize(("host", "policy", "says"), [
    ("db.example.com", "    tls: {mode: ISTIO_MUTUAL}", "ISTIO_MUTUAL is the mesh's own mTLS"),
    ("db.example.com", "    tls: {mode: SIMPLE, credentialName: pg-secret}", "Kubernetes secrets are not available"),
    ("db.example.com", "    tls: {mode: SIMPLE, insecureSkipVerify: true}", "always verifies"),
    ("db.example.com", "    tls: {mode: MUTUAL}", "MUTUAL needs both tls.clientCertificate and tls.privateKey"),
    ("db.example.com", "    loadBalancer: {simple: RANDOM}", "load-balancer settings are not supported"),
    ("db.example.com", "    portLevelSettings: [{port: {number: 9999}, tls: {mode: SIMPLE}}]",
     "port(s) 9999 are not ports of 'external-pg'"),
])
def test_bad_destination_rules(host: str, policy: str, says: str) -> None:
    text = TCP_BY_CIDR.format(api="networking.istio.io/v1") + DR.format(host=host, policy=policy)
    found = problems(text)
    assert any(says in p for p in found), found


def test_two_tls_sources_for_one_entry_are_refused() -> None:
    text = TCP_BY_CIDR.format(api="networking.istio.io/v1")
    twice = text + DR.format(host="db.example.com", policy="    tls: {mode: SIMPLE}") * 2
    assert any("already has TLS settings from" in p for p in problems(twice))


def test_overlapping_tcp_entries_across_documents_name_both() -> None:
    text = "\n---\n".join(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.example.com]
  ports: [{{number: 3306, name: tcp, protocol: TCP}}]
""" for name in ("mysql-a", "mysql-b"))
    assert problems(text) == ["in.yaml: external services 'mysql-a' and 'mysql-b' both claim TCP port 3306 for every "
                              "address (neither has addresses); give them addresses (CIDRs) or merge them"]


def test_all_or_nothing_reports_every_document() -> None:
    good = TCP_BY_CIDR.format(api="networking.istio.io/v1")
    bad1 = TLS_BY_SNI.split("---")[1].replace("resolution: NONE", "resolution: DNS")
    bad2 = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec: {}\n"
    found = problems("---\n".join([good, bad1, bad2]))
    assert [p.split(":")[0] for p in found] == ["in.yaml document 2 (ServiceEntry 'wikipedia')",
                                                "in.yaml document 3 (VirtualService 'vs')"]


@pytest.mark.parametrize(("text", "says"), [
    ("apiVersion: a\napiVersion: b\n", "duplicate key 'apiVersion'"),
    ("a: &x {k: v}\nb: *x\n", "aliases"),
    ("spec: [unclosed\n", "does not parse"),
])
def test_yaml_level_problems(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_external_yaml(text)


def test_size_limit_and_empty_documents() -> None:
    with pytest.raises(TooLarge, match=str(MAX_INPUT_BYTES)):
        parse_external_yaml("#" * (MAX_INPUT_BYTES + 1))
    assert parse_external_yaml("---\n---\n") == ExternalConfig()


def test_json_documents_from_an_api_body() -> None:
    docs = json.loads(json.dumps(list(yaml.safe_load_all(TLS_BY_SNI))))
    assert parse_external_documents(docs) == parse_external_yaml(TLS_BY_SNI)


# ---------------------------------------------------------------- round trip

_exact = st.sampled_from(["api.example.com", "db.example.org", "x.y.example.net"])
_wild = st.sampled_from(["*.example.com", "*.com"])


@st.composite
def valid_services(draw: st.DrawFn) -> ExternalService:
    """Valid entries by construction (each rule of external_service_problems respected)."""
    resolution = draw(st.sampled_from(list(Resolution)))
    hosts = [draw(_exact)] + draw(st.lists(_exact if resolution == Resolution.DNS else _wild | _exact, max_size=2))
    ports = draw(st.lists(st.builds(ServicePort, st.integers(1, 65535), st.sampled_from(["tcp", "tls", "pg", "redis"]),
                                    st.sampled_from(list(Protocol)), st.none() | st.integers(1, 65535)),
                          min_size=1, max_size=2, unique_by=(lambda p: p.number, lambda p: p.name)))
    cidrs = ["192.0.2.7/32"] if resolution == Resolution.DNS else ["203.0.113.0/24", "192.0.2.7/32", "2001:db8::/48"]
    addresses = draw(st.lists(st.sampled_from(cidrs), max_size=2, unique=True))
    ips = ["192.0.2.9", "2001:db8::9"] + (["a.example.org"] if resolution == Resolution.DNS else [])
    endpoints = [] if resolution == Resolution.NONE else draw(st.lists(
        st.builds(Endpoint, st.sampled_from(ips), st.just(()) | st.just(((ports[0].name, 6432),))), min_size=resolution == Resolution.STATIC, max_size=2))
    tls = TlsOrigination()
    if all(p.protocol == Protocol.TCP for p in ports):
        tls = draw(st.sampled_from([tls, TlsOrigination(TlsMode.SIMPLE, "/etc/tether/ca.pem", sni="sni.example.com",
                                                        subject_alt_names=("san.example.com",)),
                                    TlsOrigination(TlsMode.MUTUAL, None, "/c.pem", "/c.key")]))
    return ExternalService(
        draw(st.sampled_from(["pg", "api", "payments", "redis-1"])), tuple(dict.fromkeys(hosts)), tuple(ports),
        tuple(addresses), resolution, tuple(endpoints), tls=tls,
        protocol_hint=draw(st.none() | st.just("postgres")) if tls.mode != TlsMode.DISABLE else None,
        allowed_sources=draw(st.sampled_from([("*",), ("web", "api")])))


@given(valid_services(), st.none() | st.just(OutboundPolicy(OutboundMode.REGISTRY_ONLY, (("batch", OutboundMode.ALLOW_ANY),))))
def test_format_then_parse_gives_back_the_same_config(service: ExternalService, policy: OutboundPolicy | None) -> None:
    assert external_service_problems(service) == []
    config = ExternalConfig((service,), policy)
    assert parse_external_yaml(format_external_yaml(config)) == config


def test_an_http_port_matched_by_address_is_carried_as_opaque_tcp_with_a_warning() -> None:
    config = parse_external_yaml(TCP_BY_CIDR.format(api="networking.istio.io/v1").replace("protocol: TCP", "protocol: HTTP"))
    (svc,) = config.services
    assert [p.protocol for p in svc.ports] == [Protocol.TCP] and svc.addresses == ("203.0.113.0/24",)
    assert config.notes == ("<input> document 1 (ServiceEntry 'external-pg'): spec.ports: protocol HTTP is carried as "
                            "opaque TCP to spec.addresses: Tether proxies external traffic at L4, so who may reach "
                            "which address is as written, but nothing is HTTP-aware",)
