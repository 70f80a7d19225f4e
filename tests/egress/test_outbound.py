"""The sidecar's transparent outbound listener on loopback (original destinations injected).

Real sockets and real TLS throughout; only SO_ORIGINAL_DST is replaced by a lookup the
test fills in before each dial (tests/netns/ run the same paths behind real iptables).
"""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
import trustme

from tether.core.external import EgressSnapshot, ExternalService, OutboundMode, OutboundPolicy, Protocol, ServicePort
from tether.core.external import TlsMode, TlsOrigination
from tether.proxy.egress import EgressProxy, MeshService
from tether.proxy.egress.stats import EgressStats

from egress_kit import (
    LogSink, Redirects, external_client_context, external_server_context, instance, material,
    mesh_server_context, start_echo, start_whoami, wait_log,
)

LO = "127.0.0.1"


def tcp_entry(name: str, port: int, **kw) -> ExternalService:
    return ExternalService(name, hosts=kw.pop("hosts", ()), addresses=kw.pop("addresses", (f"{LO}/32",)),
                           ports=(ServicePort(port, "tcp", Protocol.TCP),), **kw)


def tls_entry(name: str, hosts: tuple[str, ...], port: int, **kw) -> ExternalService:
    return ExternalService(name, hosts=hosts, ports=(ServicePort(port, "tls", Protocol.TLS),), **kw)


async def start_sidecar(mesh_ca, services=(), mode=OutboundMode.REGISTRY_ONLY, mesh=(), service="ratings"):
    redirects = Redirects()
    px = EgressProxy(material(mesh_ca, service), service=service,
                     snapshot=EgressSnapshot.build(services, OutboundPolicy(mode)), mesh=mesh,
                     access_log=LogSink(), original_destination=redirects)
    addr = await px.open_outbound(LO, 0)
    return px, addr, redirects


async def roundtrip(reader, writer, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), 5)


async def closed(reader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except (ConnectionError, ssl.SSLError):
        return True


async def test_registry_only_blocks_unregistered_tcp_and_names_it(mesh_ca):
    server, port = await start_echo()
    px, addr, redirects = await start_sidecar(mesh_ca)
    try:
        reader, writer = await redirects.dial(addr, (LO, port))
        writer.write(b"hello")
        assert await closed(reader)
        rec = await wait_log(px, lambda r: r["result"] == "denied")
        assert rec["destination"] == f"{LO}:{port}" and rec["role"] == "sidecar"
        assert rec["rule"] == f"REGISTRY_ONLY: no external service matches {LO}:{port}"
        assert rec["source"] == mesh_ca.spiffe_id("ratings") and rec["entry"] is None
        assert px.stats.blocked[("sidecar", "ratings", f"{LO}:{port}")] == 1
    finally:
        await px.close()
        server.close()


async def test_registered_tcp_and_allow_any_pass_through(mesh_ca):
    server, port = await start_echo()
    other, other_port = await start_echo()
    px, addr, redirects = await start_sidecar(mesh_ca, [tcp_entry("echo", port)])
    try:
        reader, writer = await redirects.dial(addr, (LO, port))
        assert await roundtrip(reader, writer, b"x" * 300_000) == b"x" * 300_000
        writer.write_eof()  # half-close travels on, and the server's close comes back
        assert await closed(reader)
        rec = await wait_log(px, lambda r: r["result"] == "allowed")
        assert rec["entry"] == "echo" and rec["route"] == "direct"
        assert rec["bytes_received"] == rec["bytes_sent"] == 300_000
        assert rec["rule"] == f"external service 'echo' matches {LO}:{port} by address {LO}/32"
        # Another port is not registered: blocked under REGISTRY_ONLY, passed under ALLOW_ANY.
        reader, writer = await redirects.dial(addr, (LO, other_port))
        writer.write(b"let me in")
        assert await closed(reader)
        rec = await wait_log(px, lambda r: r["result"] == "denied" and r["destination"] == f"{LO}:{other_port}")
        assert rec["rule"] == f"REGISTRY_ONLY: no external service matches {LO}:{other_port}"
        px.update_registry(EgressSnapshot.build([tcp_entry("echo", port)], OutboundPolicy(OutboundMode.ALLOW_ANY)))
        reader, writer = await redirects.dial(addr, (LO, other_port))
        assert await roundtrip(reader, writer, b"ping") == b"ping"
        writer.close()
        rec = await wait_log(px, lambda r: r["result"] == "allowed" and r["entry"] is None)
        assert rec["rule"].startswith("ALLOW_ANY: no external service matches")
    finally:
        await px.close()
        server.close()
        other.close()


async def test_tls_is_decided_on_the_sni_and_a_block_names_the_host(mesh_ca, ext_ca):
    ctx = external_server_context(ext_ca, "api.payments.example", "evil.example")
    server, port = await start_echo(ctx)
    entry = tls_entry("payments", ("*.payments.example",), port)
    px, addr, redirects = await start_sidecar(mesh_ca, [entry])
    client = external_client_context(ext_ca)
    try:
        reader, writer = await redirects.dial(addr, (LO, port), ssl_ctx=client, server_hostname="api.payments.example")
        assert await roundtrip(reader, writer, b"pay") == b"pay"
        writer.close()
        rec = await wait_log(px, lambda r: r["result"] == "allowed")
        assert rec["sni"] == "api.payments.example" and rec["entry"] == "payments"
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await redirects.dial(addr, (LO, port), ssl_ctx=client, server_hostname="evil.example")
        rec = await wait_log(px, lambda r: r["result"] == "denied")
        assert rec["rule"] == f"REGISTRY_ONLY: no external service matches sni=evil.example:{port}"
        assert rec["sni"] == "evil.example"
    finally:
        await px.close()
        server.close()


async def test_allowed_sources_restrict_an_entry_per_service(mesh_ca, ext_ca):
    server, port = await start_echo(external_server_context(ext_ca, "api.payments.example"))
    entry = tls_entry("payments", ("*.payments.example",), port, allowed_sources=("web",))
    web, web_addr, web_redirects = await start_sidecar(mesh_ca, [entry], service="web")
    batch, batch_addr, batch_redirects = await start_sidecar(mesh_ca, [entry], service="batch")
    client = external_client_context(ext_ca)
    try:
        reader, writer = await web_redirects.dial(web_addr, (LO, port), ssl_ctx=client,
                                                  server_hostname="api.payments.example")
        assert await roundtrip(reader, writer, b"ok") == b"ok"
        writer.close()
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await batch_redirects.dial(batch_addr, (LO, port), ssl_ctx=client, server_hostname="api.payments.example")
        rec = await wait_log(batch, lambda r: r["result"] == "denied")
        assert rec["entry"] == "payments"
        assert "does not allow source 'batch' (allowed: web)" in rec["rule"]
    finally:
        await web.close()
        await batch.close()
        server.close()


async def test_tls_origination_simple_and_mutual(mesh_ca, ext_ca, tmp_path):
    client_ca = trustme.CA()  # signs the proxy's client certificate for MUTUAL
    server, port = await start_echo(external_server_context(ext_ca, "db.example.com"))
    mserver, mport = await start_echo(external_server_context(ext_ca, "vault.example.com", client_ca=client_ca))
    ca_file = tmp_path / "ext-ca.pem"
    ext_ca.cert_pem.write_to_path(str(ca_file))
    client_cert = client_ca.issue_cert("ratings.client")
    cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_cert.private_key_pem.write_to_path(str(key_file))
    simple = tcp_entry("db", port, hosts=("db.example.com",),
                       tls=TlsOrigination(TlsMode.SIMPLE, ca_certificates=str(ca_file)))
    mutual = tcp_entry("vault", mport, hosts=("vault.example.com",),
                       tls=TlsOrigination(TlsMode.MUTUAL, ca_certificates=str(ca_file),
                                          client_certificate=str(cert_file), private_key=str(key_file)))
    px, addr, redirects = await start_sidecar(mesh_ca, [simple, mutual])
    try:
        for p in (port, mport):
            reader, writer = await redirects.dial(addr, (LO, p))  # the application speaks plain TCP
            assert await roundtrip(reader, writer, b"plain in, TLS out") == b"plain in, TLS out"
            writer.close()
        recs = [await wait_log(px, lambda r, n=n: r["entry"] == n and r["result"] == "allowed") for n in ("db", "vault")]
        assert {r["route"] for r in recs} == {"originate"}
        # A server whose certificate does not name the host is refused, and the log says why.
        px.update_registry(EgressSnapshot.build([tcp_entry("db", port, hosts=("other.example.com",), tls=TlsOrigination(
            TlsMode.SIMPLE, ca_certificates=str(ca_file)))], OutboundPolicy(OutboundMode.REGISTRY_ONLY)))
        reader, writer = await redirects.dial(addr, (LO, port))
        writer.write(b"x")
        assert await closed(reader)
        rec = await wait_log(px, lambda r: r["result"] == "origination-failure")
        assert "server certificate rejected" in rec["reason"] and "other.example.com" in rec["reason"]
    finally:
        await px.close()
        server.close()
        mserver.close()


async def test_virtual_ip_goes_to_a_mesh_instance_over_mutual_tls(mesh_ca):
    ctx = mesh_server_context(mesh_ca, "inventory")
    server, port = await start_whoami(ctx)
    dead = instance(1)  # nothing listens on port 1: tried, fails, the next instance serves
    inventory = MeshService("inventory", mesh_ca.spiffe_id("inventory"), (dead, instance(port)), "240.0.0.7")
    px, addr, redirects = await start_sidecar(mesh_ca, mesh=[inventory])
    try:
        reader, writer = await redirects.dial(addr, ("240.0.0.7", 80))
        hello = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert hello == {"peer": [mesh_ca.spiffe_id("ratings")]}
        assert await roundtrip(reader, writer, b"stock?") == b"stock?"
        writer.close()
        rec = await wait_log(px, lambda r: r["result"] == "allowed")
        assert rec["route"] == "mesh" and rec["upstream_address"] == f"{LO}:{port}"
        # An instance presenting another identity is refused, not used.
        px.update_mesh([MeshService("inventory", mesh_ca.spiffe_id("billing"), (instance(port),), "240.0.0.7")])
        reader, writer = await redirects.dial(addr, ("240.0.0.7", 80))
        assert await closed(reader)
        rec = await wait_log(px, lambda r: r["result"] == "upstream-identity-mismatch")
        assert mesh_ca.spiffe_id("billing") in rec["reason"]
    finally:
        await px.close()
        server.close()


async def test_a_connection_that_was_not_redirected_is_refused(mesh_ca):
    px = EgressProxy(material(mesh_ca, "ratings"), service="ratings", access_log=LogSink())
    addr = await px.open_outbound(LO, 0)
    try:
        reader, writer = await asyncio.open_connection(*addr)
        assert await closed(reader)
        rec = await wait_log(px, lambda r: True)
        assert rec["result"] == "not-redirected"
    finally:
        await px.close()


def test_blocked_series_are_bounded():
    stats = EgressStats()
    for i in range(1200):
        stats.count_blocked("sidecar", "batch", f"h{i}.example:443")
    assert len(stats.blocked) == 1001 and stats.blocked[("sidecar", "batch", "other")] == 200


async def test_idle_and_half_closed_relays_are_swept(mesh_ca):
    server, port = await start_echo()
    redirects = Redirects()
    px = EgressProxy(material(mesh_ca, "ratings"), service="ratings", access_log=LogSink(),
                     snapshot=EgressSnapshot.build([tcp_entry("echo", port)]), original_destination=redirects,
                     idle_timeout=0.3, half_close_timeout=0.3)
    addr = await px.open_outbound(LO, 0)
    try:
        reader, writer = await redirects.dial(addr, (LO, port))
        assert await roundtrip(reader, writer, b"hi") == b"hi"
        assert await closed(reader)  # nothing more either way: the sweep closes it
        rec = await wait_log(px, lambda r: r["result"] == "idle-timeout")
        assert rec["reason"] == "no bytes either way for 0.3s" and rec["bytes_received"] == 2
    finally:
        await px.close()
        server.close()
