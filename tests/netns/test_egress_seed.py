"""Egress end to end in network namespaces: the seed scenario and transparent proxying.

Hosts: the application host `app` (198.51.100.10) runs `ratings` (uid 65534) behind its
transparent sidecar (iptables from `tether connect redirect-traffic -proxy-id`); the
gateway host `gw` (198.51.100.20) runs the control plane (a dev agent) and the egress
gateway (`tether proxy -gateway egress -register`); the "internet" host `net`
(198.51.100.30) runs PostgreSQL (ssl=on, TLS-only pg_hba), Redis (TLS only), a TCP echo,
and a mesh service `inventory` behind its own sidecar. The internet host drops
PostgreSQL traffic that does not come from the gateway, so the database is reachable
only through the exit the registry names.
"""

from __future__ import annotations

import sys

import pytest

from tether.testing.deps import missing
from egress_world import APP_UID, CLIENT, EgressWorld, missing_tools

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(bool(missing_tools("postgres", "psql", "redis-server", "redis-cli", "iptables")),
                                 reason=missing(", ".join(missing_tools("postgres", "psql", "redis-server", "redis-cli",
                                                                        "iptables"))))]

APP, GW, NET = "198.51.100.10", "198.51.100.20", "198.51.100.30"
PSQL = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
DB = "host=db.example.com port=5432 user=postgres dbname=postgres sslmode=prefer connect_timeout=10"

REGISTRY = """
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {{name: ratings-db}}
spec:
  hosts: [db.example.com]
  addresses: [{net}/32]
  ports: [{{number: 5432, name: pg, protocol: TCP}}]
  resolution: NONE
  tls: {{mode: SIMPLE, caCertificates: {ca}}}
  protocolHint: postgres
  allowedSources: [ratings]
  egressGateway: egress-gateway
---
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {{name: cache}}
spec:
  hosts: [cache.example.com]
  addresses: [{net}/32]
  ports: [{{number: 6379, name: redis, protocol: TCP}}]
  tls: {{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {crt}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ledger}}
spec:
  hosts: [ledger.internal]
  addresses: [{net}/32]
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  location: MESH_EXTERNAL
  resolution: NONE
---
apiVersion: tether.dev/v1
kind: OutboundPolicy
metadata: {{name: mesh}}
spec: {{mode: REGISTRY_ONLY}}
"""


@pytest.fixture(scope="module")
def world():
    with EgressWorld({"app": APP, "gw": GW, "net": NET}) as w:
        w.hosts_file({"db.example.com": NET, "cache.example.com": NET, "ledger.internal": NET})
        # Only the gateway may talk to the database: the registry's exit is the only way out.
        w.sh("net", "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5432", "!", "-s", GW, "-j", "DROP")
        w.start_agent("gw")
        crt, key = w.client_cert("ratings")  # Redis wants a client certificate: MUTUAL origination
        w.apply("gw", REGISTRY.format(net=NET, ca=w.ca_file, crt=crt, key=key))
        w.start_postgres("net", "db.example.com")
        w.start_redis("net", "cache.example.com")
        w.start_echo("net", NET, 7000)
        w.start_echo("net", NET, 7001)
        w.start_echo("net", "127.0.0.1", 9000, banner="inventory")
        w.spawn("inventory", "net", [sys.executable, "-m", "tether.cli.proxy_cmds", "-service", "inventory",
                                     "-listen", f"{NET}:21001", "-service-addr", "127.0.0.1:9000", "-register",
                                     "-http-addr", w.agent_addr]).wait(lambda l: l.startswith("READY "))
        w.start_gateway("gw")
        w.start_sidecar("app", "ratings")
        w.wait_gateway_known("app")
        yield w


def psql(w, sql: str):
    return w.sh("app", *PSQL, DB, "-c", sql, user=APP_UID, check=False, env={"HOME": "/tmp"})


def client(w, host: str, port: int, send: str, *tls: str):
    return w.sh("app", sys.executable, "-c", CLIENT, host, str(port), send, *tls, user=APP_UID, check=False)


def test_seed_ratings_reads_postgres_through_the_gateway(world):
    r = psql(world, "select stars from ratings where product = 1; "
                    "select ssl from pg_stat_ssl where pid = pg_backend_pid();")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["5", "t"]  # the server saw TLS, which psql never spoke
    side = world.procs["sidecar-ratings"].record(lambda r: r.get("entry") == "ratings-db" and r["result"] == "allowed")
    assert side["route"] == "gateway" and side["destination"] == f"{NET}:5432"
    assert side["upstream_address"] == f"{GW}:8443" and side["source"].endswith("/svc/ratings")
    gw = world.procs["gateway"].record(lambda r: r.get("entry") == "ratings-db" and r["result"] == "allowed")
    assert gw["route"] == "originate-postgres" and gw["source"].endswith("/svc/ratings")
    assert gw["upstream_address"] == f"{NET}:5432" and gw["bytes_sent"] > 0 and gw["duration_ms"] > 0


def test_an_application_cannot_bypass_registry_only(world):
    # The application knows nothing about the mesh: it dials an address and a port.
    r = client(world, NET, 7001, "hello")
    assert r.returncode == 3, r.stdout
    rec = world.procs["sidecar-ratings"].record(lambda r: r["result"] == "denied" and r["destination"] == f"{NET}:7001")
    assert rec["rule"] == f"REGISTRY_ONLY: no external service matches {NET}:7001"
    # A registered TCP destination (an Istio ServiceEntry, by CIDR) works through the same listener.
    r = client(world, "ledger.internal", 7000, "debit 5")
    assert r.stdout.strip() == "debit 5", r.stdout + r.stderr
    assert world.procs["sidecar-ratings"].record(lambda r: r.get("entry") == "ledger")["route"] == "direct"


def test_redis_over_tls_by_mutual_tls_origination(world):
    # The application speaks plain RESP; the sidecar opens TLS with the entry's client certificate.
    r = world.sh("app", "redis-cli", "-h", "cache.example.com", "-p", "6379", "SET", "greeting", "hi", user=APP_UID,
                 check=False)
    assert r.stdout.strip() == "OK", r.stdout + r.stderr
    r = world.sh("app", "redis-cli", "-h", "cache.example.com", "-p", "6379", "GET", "greeting", user=APP_UID)
    assert r.stdout.strip() == "hi"
    rec = world.procs["sidecar-ratings"].record(lambda r: r.get("entry") == "cache" and r["result"] == "allowed")
    assert rec["route"] == "originate" and rec["upstream_address"] == f"{NET}:6379"


def test_a_virtual_ip_reaches_the_mesh_service_over_mutual_tls(world):
    vips = world.wait_api("app", "/v1/tether/virtual-ips", lambda got: "inventory" in got)
    r = client(world, vips["inventory"], 80, "stock?")
    assert r.stdout.split() == ["inventory", "stock?"], r.stdout + r.stderr
    rec = world.procs["sidecar-ratings"].record(lambda r: r.get("route") == "mesh" and r["result"] == "allowed")
    assert rec["upstream_address"] == f"{NET}:21001" and rec["rule"] == "virtual IP of mesh service 'inventory'"
    # The inventory sidecar saw ratings' identity, proved by mutual TLS.
    inbound = world.procs["inventory"].record(lambda r: r.get("direction") == "inbound" and r["result"] == "allowed")
    assert inbound["source"].endswith("/svc/ratings")


VAULT_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: vault, labels: {{applied: "{n}"}}}}
spec:
  hosts: [vault.example.com]
  addresses: [{net}/32]
  ports: [{{number: 7002, name: tcp, protocol: TCP}}]
  location: MESH_EXTERNAL
  resolution: NONE
"""
VAULT_TLS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: vault-tls}}
spec:
  host: vault.example.com
  trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {ca}, sni: vault.example.com}}}}
"""


def test_reapplying_a_service_entry_keeps_its_destination_rules_tls_origination(world):
    """Issue 11: re-applying a ServiceEntry after its DestinationRule silently dropped TLS origination."""
    world.start_echo("net", NET, 7002, tls_names=("vault.example.com",))  # a TLS-only server
    sidecar = world.procs["sidecar-ratings"]
    updates = lambda: sum("egress registry: 4 external service(s)" in line for line in sidecar.lines)  # noqa: E731
    both = VAULT_ENTRY.format(n=1, net=NET) + "---" + VAULT_TLS.format(ca=world.ca_file)
    world.apply("gw", both)
    try:
        sidecar.wait(lambda _: updates() >= 1)
        r = client(world, NET, 7002, "first")
        assert r.stdout.strip() == "first", r.stdout + r.stderr  # plain from the app, TLS to the server
        seen = updates()
        world.apply("gw", VAULT_ENTRY.format(n=2, net=NET))  # the entry again, alone (a label changed)
        sidecar.wait(lambda _: updates() > seen)  # the sidecar has the re-applied registry
        r = client(world, NET, 7002, "again")
        assert r.stdout.strip() == "again", r.stdout + r.stderr  # the server still saw TLS
        vault = lambda: [rec for rec in sidecar.records() if rec.get("entry") == "vault"]  # noqa: E731
        sidecar.wait(lambda _: len(vault()) >= 2)
        assert [(rec["result"], rec["route"]) for rec in vault()] == [("allowed", "originate")] * 2
    finally:
        world.tether("gw", "delete", "-f", "-", stdin=both)  # leaves the registry as the next tests expect


def test_seed_breaks_with_a_named_log_line_when_the_entry_is_removed(world):
    world.tether("gw", "external", "delete", "ratings-db")
    try:
        sidecar = world.procs["sidecar-ratings"]
        # The sidecar's blocking watch brings the deletion over; the next query is refused.
        sidecar.wait(lambda l: "egress registry: 2 external service(s)" in l)
        r = psql(world, "select 1")
        assert r.returncode != 0
        rec = sidecar.record(lambda r: r["result"] == "denied" and r["destination"] == f"{NET}:5432")
        assert rec["rule"] == f"REGISTRY_ONLY: no external service matches {NET}:5432"
        assert rec["source"].endswith("/svc/ratings") and rec["entry"] is None
    finally:
        world.apply("gw", REGISTRY.format(net=NET, ca=world.ca_file, crt="-", key="-").split("---")[0])
