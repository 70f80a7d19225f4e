"""PostgreSQL-aware TLS origination on loopback, against a minimal server speaking the real
SSLRequest exchange (tests/netns/ run the same against a real PostgreSQL with ssl=on)."""

from __future__ import annotations

import asyncio
import struct

from tether.core.external import EgressSnapshot, ExternalService, OutboundMode, OutboundPolicy, ServicePort
from tether.core.external import TlsMode, TlsOrigination
from tether.core.pgwire import format_ssl_request
from tether.proxy.egress import EgressProxy

from egress_kit import LogSink, Redirects, external_server_context, material, wait_log

LO = "127.0.0.1"


def startup(user: str = "app", database: str = "orders") -> bytes:
    body = struct.pack("!I", 3 << 16) + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    return struct.pack("!I", len(body) + 4) + body


async def start_pg(ctx, answer: bytes = b"S"):
    """Answers SSLRequest with `answer`; after TLS, replies 'R' + the startup packet it got."""
    seen: list[str] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            request = await r.readexactly(8)
            seen.append("ssl-request" if request == format_ssl_request() else "other")
            w.write(answer)
            await w.drain()
            if answer != b"S":
                return
            await w.start_tls(ctx)
            length = struct.unpack("!I", await r.readexactly(4))[0]
            packet = await r.readexactly(length - 4)
            seen.append("tls-startup")
            w.write(b"R" + struct.pack("!I", length) + packet)
            await w.drain()
            await r.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, LO, 0)
    return server, server.sockets[0].getsockname()[1], seen


async def sidecar(mesh_ca, port: int, ca_file: str):
    entry = ExternalService("orders-db", hosts=("db.example.com",), addresses=(f"{LO}/32",),
                            ports=(ServicePort(port, "pg"),), protocol_hint="postgres",
                            tls=TlsOrigination(TlsMode.SIMPLE, ca_certificates=ca_file))
    redirects = Redirects()
    px = EgressProxy(material(mesh_ca, "ratings"), service="ratings", access_log=LogSink(),
                     snapshot=EgressSnapshot.build([entry], OutboundPolicy(OutboundMode.REGISTRY_ONLY)),
                     original_destination=redirects)
    return px, await px.open_outbound(LO, 0), redirects


async def test_the_sidecar_answers_n_then_negotiates_tls_with_the_server(mesh_ca, ext_ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ext_ca.cert_pem.write_to_path(str(ca_file))
    server, port, seen = await start_pg(external_server_context(ext_ca, "db.example.com"))
    px, addr, redirects = await sidecar(mesh_ca, port, str(ca_file))
    try:
        reader, writer = await redirects.dial(addr, (LO, port))
        writer.write(format_ssl_request())  # libpq sslmode=prefer
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"N"
        writer.write(startup())
        reply = await asyncio.wait_for(reader.readexactly(1 + len(startup())), 5)
        assert reply == b"R" + startup()  # the server got our startup packet, over TLS
        assert seen == ["ssl-request", "tls-startup"]
        writer.close()
        rec = await wait_log(px, lambda r: r["result"] == "allowed")
        assert rec["route"] == "originate-postgres" and rec["entry"] == "orders-db"
        # Without an SSLRequest (sslmode=disable) the startup packet goes the same way.
        reader, writer = await redirects.dial(addr, (LO, port))
        writer.write(startup("bob"))
        assert await asyncio.wait_for(reader.readexactly(1 + len(startup("bob"))), 5) == b"R" + startup("bob")
        writer.close()
    finally:
        await px.close()
        server.close()


async def test_a_server_without_tls_is_a_named_failure(mesh_ca, ext_ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ext_ca.cert_pem.write_to_path(str(ca_file))
    server, port, _ = await start_pg(None, answer=b"N")
    px, addr, redirects = await sidecar(mesh_ca, port, str(ca_file))
    try:
        reader, writer = await redirects.dial(addr, (LO, port))
        writer.write(format_ssl_request())
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"N"
        writer.write(startup())
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        rec = await wait_log(px, lambda r: r["result"] == "origination-failure")
        assert "answered 'N' to SSLRequest" in rec["reason"]
    finally:
        await px.close()
        server.close()
