"""Sidecar -> egress gateway -> external service on loopback: routing, per-source policy, SNI verifier."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tether.core.external import EgressSnapshot, Endpoint, ExternalService, OutboundMode, OutboundPolicy, Protocol
from tether.core.external import Resolution, ServicePort
from tether.proxy.egress import EgressProxy, MeshService
from tether.proxy.egress.preamble import format_preamble

from egress_kit import (
    LogSink, Redirects, external_client_context, external_server_context, instance, material, mesh_client_context,
    start_echo, wait_log,
)

LO = "127.0.0.1"
GW = "egress-gateway"


def payments(port: int, allowed=("*",)) -> ExternalService:
    # STATIC keeps loopback tests free of DNS; tests/netns/ cover SNI resolution at the gateway.
    return ExternalService("payments", hosts=("*.payments.example",), ports=(ServicePort(port, "tls", Protocol.TLS),),
                           resolution=Resolution.STATIC, endpoints=(Endpoint(LO),), allowed_sources=allowed,
                           egress_gateway=GW)


def registry(*entries) -> EgressSnapshot:
    return EgressSnapshot.build(entries, OutboundPolicy(OutboundMode.REGISTRY_ONLY))


class Mesh:
    """An external TLS echo server, a gateway, and sidecars for any service on demand."""

    def __init__(self, mesh_ca, ext_ca) -> None:
        self.ca, self.ext_ca = mesh_ca, ext_ca
        self.proxies: list[EgressProxy] = []

    async def start(self, gateway_entries=None) -> "Mesh":
        ctx = external_server_context(self.ext_ca, "api.payments.example", "evil.example")
        self.server, self.port = await start_echo(ctx)
        self.gw = EgressProxy(material(self.ca, GW), service=GW, access_log=LogSink(),
                              snapshot=registry(*(gateway_entries or [payments(self.port, allowed=("web",))])))
        self.gw_addr = await self.gw.open_gateway(LO, 0)
        self.proxies.append(self.gw)
        return self

    async def sidecar(self, service: str, entries=None):
        redirects = Redirects()
        gw = MeshService(GW, self.ca.spiffe_id(GW), (instance(self.gw_addr[1]),))
        px = EgressProxy(material(self.ca, service), service=service, mesh=[gw], access_log=LogSink(),
                         snapshot=registry(*(entries or [payments(self.port)])), original_destination=redirects)
        self.proxies.append(px)
        return px, await px.open_outbound(LO, 0), redirects

    async def close(self) -> None:
        for px in self.proxies:
            await px.close()
        self.server.close()


@pytest.fixture
async def mesh(mesh_ca, ext_ca):
    m = await Mesh(mesh_ca, ext_ca).start()
    yield m
    await m.close()


async def test_web_reaches_a_wildcard_host_through_the_gateway_logged_at_both(mesh, ext_ca):
    px, addr, redirects = await mesh.sidecar("web")
    reader, writer = await redirects.dial(addr, ("198.51.100.99", mesh.port), ssl_ctx=external_client_context(ext_ca),
                                          server_hostname="api.payments.example")
    writer.write(b"charge 10")
    assert await asyncio.wait_for(reader.readexactly(9), 5) == b"charge 10"
    writer.close()
    side = await wait_log(px, lambda r: r["result"] == "allowed")
    assert side["route"] == "gateway" and side["entry"] == "payments" and side["sni"] == "api.payments.example"
    assert side["upstream_address"] == f"{LO}:{mesh.gw_addr[1]}"
    gw = await wait_log(mesh.gw, lambda r: r["result"] == "allowed")
    assert gw["role"] == "gateway" and gw["source"] == mesh.ca.spiffe_id("web")
    assert gw["sni"] == "api.payments.example" and gw["entry"] == "payments"
    assert gw["destination"] == f"198.51.100.99:{mesh.port}" and gw["upstream_address"] == f"{LO}:{mesh.port}"
    assert gw["bytes_received"] > 9 and gw["bytes_sent"] > 9  # the TLS records of the application's session


async def test_the_gateway_decides_per_source_service(mesh, ext_ca):
    # batch's own sidecar lets it through (its registry has no allowedSources), the gateway does not.
    px, addr, redirects = await mesh.sidecar("batch")
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await redirects.dial(addr, (LO, mesh.port), ssl_ctx=external_client_context(ext_ca),
                             server_hostname="api.payments.example")
    rec = await wait_log(mesh.gw, lambda r: r["result"] == "denied")
    assert rec["source"] == mesh.ca.spiffe_id("batch") and rec["entry"] == "payments"
    assert "does not allow source 'batch' (allowed: web)" in rec["rule"]
    assert mesh.gw.stats.blocked[("gateway", "batch", f"api.payments.example:{mesh.port}")] == 1


def client_hello(server_name: str) -> bytes:
    """The bytes of a real ClientHello for `server_name`."""
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def rogue(mesh, mesh_sni: str, payload: bytes, service: str = "web") -> bytes:
    """A workload speaking to the gateway directly with a valid mesh certificate."""
    reader, writer = await asyncio.open_connection(*mesh.gw_addr, ssl=mesh_client_context(mesh.ca, service),
                                                   server_hostname=mesh_sni)
    writer.write(payload)
    try:
        return await asyncio.wait_for(reader.read(100), 5)
    except (ConnectionError, ssl.SSLError):
        return b""
    finally:
        writer.close()


async def test_sni_verifier_refuses_a_claimed_host_that_differs_from_the_application_hello(mesh):
    data = await rogue(mesh, "api.payments.example", format_preamble(LO, mesh.port) + client_hello("evil.example"))
    assert data == b""
    rec = await wait_log(mesh.gw, lambda r: r["result"] == "denied")
    assert rec["rule"] == ("SNI verifier: the mesh handshake announced 'api.payments.example' but the "
                           "application's ClientHello announces 'evil.example'")
    # No ClientHello at all behind a claimed name is refused the same way.
    await rogue(mesh, "api.payments.example", format_preamble(LO, mesh.port) + b"GET / HTTP/1.1\r\n\r\n")
    rec = await wait_log(mesh.gw, lambda r: "carries no TLS ClientHello" in r["rule"])
    assert rec["result"] == "denied"


async def test_the_gateway_refuses_non_mesh_clients_and_non_sidecar_streams(mesh):
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts the mesh, presents nothing
    no_cert.check_hostname = False
    no_cert.load_verify_locations(cadata=mesh.ca.root_pem)
    with pytest.raises((ConnectionError, ssl.SSLError)):
        reader, _ = await asyncio.open_connection(*mesh.gw_addr, ssl=no_cert, server_hostname="api.payments.example")
        await asyncio.wait_for(reader.read(1), 5)
    rec = await wait_log(mesh.gw, lambda r: r["result"] == "handshake-failure")
    assert rec["reason"].startswith("no-client-cert")
    await rogue(mesh, "api.payments.example", b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
    rec = await wait_log(mesh.gw, lambda r: r["result"] == "denied")
    assert rec["reason"].startswith("not a Tether sidecar tunnel")


async def test_plain_tcp_through_the_gateway_is_routed_by_address(mesh_ca, ext_ca):
    server, port = await start_echo()
    entry = ExternalService("ledger", addresses=(f"{LO}/32",), ports=(ServicePort(port, "tcp"),), egress_gateway=GW)
    m = await Mesh(mesh_ca, ext_ca).start(gateway_entries=[entry])
    try:
        px, addr, redirects = await m.sidecar("web", entries=[entry])
        reader, writer = await redirects.dial(addr, (LO, port))
        writer.write(b"balance")
        assert await asyncio.wait_for(reader.readexactly(7), 5) == b"balance"
        writer.close()
        rec = await wait_log(m.gw, lambda r: r["result"] == "allowed")
        assert rec["sni"] is None and rec["destination"] == f"{LO}:{port}" and rec["entry"] == "ledger"
    finally:
        await m.close()
        server.close()


async def test_the_gateway_originates_tls_and_relays_megabytes_both_ways(mesh_ca, ext_ca, tmp_path):
    # plain app -> sidecar --mTLS--> gateway --TLS (originated)--> echo: TLS on both sides of the
    # gateway's splice, with enough data to make every send short at least once.
    from tether.core.external import TlsMode, TlsOrigination

    ca_file = tmp_path / "ca.pem"
    ext_ca.cert_pem.write_to_path(str(ca_file))
    server, port = await start_echo(external_server_context(ext_ca, "files.example.com"))
    entry = ExternalService("files", hosts=("files.example.com",), addresses=(f"{LO}/32",),
                            ports=(ServicePort(port, "tcp"),), egress_gateway=GW,
                            tls=TlsOrigination(TlsMode.SIMPLE, ca_certificates=str(ca_file)))
    m = await Mesh(mesh_ca, ext_ca).start(gateway_entries=[entry])
    try:
        px, addr, redirects = await m.sidecar("web", entries=[entry])
        reader, writer = await redirects.dial(addr, (LO, port))
        payload = bytes(range(256)) * 16384  # 4 MiB
        writer.write(payload)
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        assert got == payload
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        rec = await wait_log(m.gw, lambda r: r["result"] == "allowed")
        assert rec["route"] == "originate" and rec["bytes_received"] == rec["bytes_sent"] == len(payload)
        side = await wait_log(px, lambda r: r["result"] == "allowed")
        assert side["bytes_received"] == side["bytes_sent"] == len(payload)
    finally:
        await m.close()
        server.close()
