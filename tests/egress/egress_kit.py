"""Loopback helpers for the egress proxy tests: certificates, echo servers, redirected dials.

The transparent listener normally learns the original destination from iptables
(SO_ORIGINAL_DST); these tests run on loopback without iptables, so the proxy is given a
lookup keyed by the client's local port, filled in just before each dial.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from dataclasses import dataclass, field

import trustme

from tether.proxy import Instance, TlsMaterial
from tether.proxy.der import parse_uri_sans
from tether.testing.pki import ThrowawayCA

TD = "example.mesh"


def material(ca: ThrowawayCA, service: str) -> TlsMaterial:
    leaf = ca.issue(service)
    return TlsMaterial(leaf.cert_pem, leaf.key_pem, (ca.root_pem,), leaf.spiffe_id)


def mesh_server_context(ca: ThrowawayCA, service: str) -> ssl.SSLContext:
    """A mesh server context (client certificates required), as a sidecar's public listener has."""
    leaf = ca.issue(service)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca.root_pem)
    _load(ctx, leaf.cert_pem + leaf.key_pem)
    return ctx


def mesh_client_context(ca: ThrowawayCA, service: str) -> ssl.SSLContext:
    leaf = ca.issue(service)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca.root_pem)
    _load(ctx, leaf.cert_pem + leaf.key_pem)
    return ctx


def _load(ctx: ssl.SSLContext, bundle: str) -> None:
    from tether.proxy.tls import load_chain_in_memory

    load_chain_in_memory(ctx, bundle)


@dataclass
class Redirects:
    """Stands in for SO_ORIGINAL_DST: client local port -> where the app was going."""

    table: dict[int, tuple[str, int]] = field(default_factory=dict)

    def __call__(self, sock: socket.socket) -> tuple[str, int]:
        port = sock.getpeername()[1]
        if port not in self.table:
            raise OSError(2, "no redirect entry")
        return self.table.pop(port)

    async def dial(self, listener: tuple[str, int], orig: tuple[str, int], *, ssl_ctx: ssl.SSLContext | None = None,
                   server_hostname: str | None = None):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.table[sock.getsockname()[1]] = orig
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, listener)
        return await asyncio.open_connection(sock=sock, ssl=ssl_ctx, server_hostname=server_hostname)


async def start_echo(ssl_ctx: ssl.SSLContext | None = None, greeting: bytes = b""):
    """An echo server (TLS when `ssl_ctx`); returns (server, port)."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            if greeting:
                w.write(greeting)
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1]


async def start_whoami(ctx: ssl.SSLContext):
    """A mesh instance stand-in: answers with the client's SPIFFE ID, then echoes."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        der = w.get_extra_info("ssl_object").getpeercert(True)
        w.write(json.dumps({"peer": list(parse_uri_sans(der))}).encode() + b"\n")
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


def external_ca() -> trustme.CA:
    return trustme.CA()


def external_server_context(ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(ctx)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    return ctx


def external_client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    return ctx


async def wait_log(px, predicate, timeout: float = 5.0) -> dict:
    """The first access-log record matching `predicate`, polling until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        px.access_log.flush()
        for rec in px.access_log.stream.records:
            if predicate(rec):
                return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching access-log record; have: {px.access_log.stream.records}")
        await asyncio.sleep(0.01)


class LogSink:
    """A text stream for the access log that keeps the JSON records."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, text: str) -> None:
        self.records.extend(json.loads(line) for line in text.splitlines() if line)

    def flush(self) -> None:
        pass


def instance(port: int, spiffe_id: str | None = None) -> Instance:
    return Instance("127.0.0.1", port, spiffe_id)
