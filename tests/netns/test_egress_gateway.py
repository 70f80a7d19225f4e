"""The egress gateway end to end: SNI routing under a wildcard, per-source rules, named blocks.

Hosts: `web` (198.51.100.11) and `batch` (198.51.100.12), each an application (uid 65534)
behind a transparent sidecar; `gw` (198.51.100.20) with the control plane and the egress
gateway; the "internet" host `net` with two TLS servers for *.payments.example on
198.51.100.30 and 198.51.100.31. The application hosts resolve every payments name to
an address where nothing listens (198.51.100.99): only the gateway, which resolves the
SNI itself, can know where api.* and other.* really are. Also: an exact host with
resolution DNS (resolved at the gateway) and an Istio ServiceEntry with STATIC endpoints.
"""

from __future__ import annotations

import sys

import pytest

from tether.testing.deps import missing
from egress_world import APP_UID, CLIENT, EgressWorld, missing_tools

pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(missing_tools("iptables")), reason=missing("iptables"))]

WEB, BATCH, GW, NET, NET2, NOWHERE = ("198.51.100.11", "198.51.100.12", "198.51.100.20", "198.51.100.30",
                                      "198.51.100.31", "198.51.100.99")

REGISTRY = f"""
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {{name: payments}}
spec:
  hosts: ["*.payments.example"]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: NONE
  allowedSources: [web]
  egressGateway: egress-gateway
---
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {{name: partner-status}}
spec:
  hosts: [status.partner.example]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: DNS                  # an exact host, resolved by the gateway
  egressGateway: egress-gateway
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ledger}}
spec:
  hosts: [ledger.internal]
  addresses: [203.0.113.7/32]      # what applications dial
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: {NET}}}]    # where it really is
---
apiVersion: tether.dev/v1
kind: OutboundPolicy
metadata: {{name: mesh}}
spec:
  mode: REGISTRY_ONLY
  services: {{batch: ALLOW_ANY}}
"""


@pytest.fixture(scope="module")
def world():
    with EgressWorld({"web": WEB, "batch": BATCH, "gw": GW, "net": NET}, {"net": [NET2]}) as w:
        apps = {"api.payments.example": NOWHERE, "other.payments.example": NOWHERE, "evil.example": NET,
                "status.partner.example": NOWHERE}
        w.hosts_file(apps, only=("web", "batch"))
        w.hosts_file({"api.payments.example": NET, "other.payments.example": NET2, "status.partner.example": NET2},
                     only=("gw",))
        w.start_agent("gw")
        w.apply("gw", REGISTRY)
        names = ("*.payments.example", "evil.example", "status.partner.example")
        w.start_echo("net", NET, 443, tls_names=names, banner="api-server")
        w.start_echo("net", NET2, 443, tls_names=names, banner="other-server")
        w.start_echo("net", NET, 7001)
        w.start_echo("net", NET, 7000)
        w.start_gateway("gw")
        w.start_sidecar("web", "web")
        w.start_sidecar("batch", "batch")
        w.wait_gateway_known("web")
        yield w


def call(w, host: str, name: str, port: int, send: str, tls: bool = True):
    args = [name, str(port), send] + ([str(w.ca_file)] if tls else [])
    return w.sh(host, sys.executable, "-c", CLIENT, *args, user=APP_UID, check=False)


def test_any_host_under_the_wildcard_is_routed_by_its_sni_at_the_gateway(world):
    for name, banner, server in (("api.payments.example", "api-server", NET),
                                 ("other.payments.example", "other-server", NET2)):
        r = call(world, "web", name, 443, "charge 10")
        assert r.stdout.split("\n")[:2] == [banner, "charge 10"], r.stdout + r.stderr
        gw = world.procs["gateway"].record(lambda r, n=name: r.get("sni") == n and r["result"] == "allowed")
        assert gw["entry"] == "payments" and gw["route"] == "direct" and gw["upstream_address"] == f"{server}:443"
        assert gw["source"].endswith("/svc/web") and gw["destination"] == f"{NOWHERE}:443"
        assert gw["rule"] == f"external service 'payments' matches sni={name}:443 by host *.payments.example"
        side = world.procs["sidecar-web"].record(lambda r, n=name: r.get("sni") == n and r["result"] == "allowed")
        assert side["route"] == "gateway" and side["upstream_address"] == f"{GW}:8443"
        assert side["bytes_received"] > 0 and side["bytes_sent"] > 0


def test_batch_may_not_reach_payments_even_under_allow_any(world):
    r = call(world, "batch", "api.payments.example", 443, "charge 10")
    assert r.returncode == 3, r.stdout
    rec = world.procs["sidecar-batch"].record(lambda r: r["result"] == "denied")
    assert rec["entry"] == "payments" and rec["sni"] == "api.payments.example"
    assert rec["rule"] == ("external service 'payments' matches sni=api.payments.example:443 but does not allow "
                           "source 'batch' (allowed: web)")


def test_an_unregistered_tls_host_is_blocked_by_name(world):
    r = call(world, "web", "evil.example", 443, "exfiltrate")
    assert r.returncode == 3, r.stdout
    rec = world.procs["sidecar-web"].record(lambda r: r.get("sni") == "evil.example")
    assert rec["result"] == "denied" and rec["rule"] == "REGISTRY_ONLY: no external service matches sni=evil.example:443"
    admin = world.procs["sidecar-web"].wait(lambda l: l.startswith("READY ")).split("admin=")[1].split()[0]
    metrics = world.sh("web", sys.executable, "-c", f"import httpx; print(httpx.get('http://{admin}/metrics').text)").stdout
    assert 'tether_egress_blocked_total{destination="evil.example:443",role="sidecar",source="web"} 1.0' in metrics


def test_outbound_mode_is_per_service(world):
    assert call(world, "batch", NET, 7001, "anything", tls=False).stdout.strip() == "anything"  # batch: ALLOW_ANY
    assert call(world, "web", NET, 7001, "anything", tls=False).returncode == 3  # web: REGISTRY_ONLY
    rec = world.procs["sidecar-batch"].record(lambda r: r["destination"] == f"{NET}:7001")
    assert rec["result"] == "allowed" and rec["rule"].startswith("ALLOW_ANY: no external service matches")


def test_an_exact_host_with_dns_resolution_and_a_static_tcp_entry(world):
    r = call(world, "web", "status.partner.example", 443, "up?")
    assert r.stdout.split("\n")[:2] == ["other-server", "up?"], r.stdout + r.stderr
    gw = world.procs["gateway"].record(lambda r: r.get("entry") == "partner-status")
    assert gw["result"] == "allowed" and gw["upstream_address"] == f"{NET2}:443"
    # An Istio ServiceEntry with STATIC endpoints: the application dials the entry's address.
    assert call(world, "batch", "203.0.113.7", 7000, "debit", tls=False).stdout.strip() == "debit"
    rec = world.procs["sidecar-batch"].record(lambda r: r.get("entry") == "ledger")
    assert rec["route"] == "direct" and rec["upstream_address"] == f"{NET}:7000"
