"""Helpers for the proxy tests: certificates, loopback echo apps, engines, polling.

Everything is real: sockets on 127.0.0.1 port 0, TLS from `tether.testing.pki`, engines
from `tether.proxy`. Waiting is done by polling a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import ssl
from dataclasses import dataclass

from tether.proxy import Engine, InboundSpec, Instance, TlsMaterial, UpstreamSpec
from tether.proxy.authz import StaticAllowList
from tether.testing.pki import Leaf, ThrowawayCA

#: Upper bound for any wait in these tests (a bound, never an expectation).
DEADLINE = 10.0


async def eventually(cond, timeout: float = DEADLINE, what: str = "condition"):
    """Poll `cond()` until it is truthy; return its value or fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Pki:
    ca: ThrowawayCA
    web: Leaf
    db: Leaf
    api: Leaf
    foreign: Leaf  # another trust domain's CA
    expired: Leaf
    not_yet_valid: Leaf
    no_uri: Leaf

    def material(self, leaf: Leaf, roots: tuple[str, ...] | None = None) -> TlsMaterial:
        return TlsMaterial(leaf.cert_pem, leaf.key_pem, roots or (self.ca.root_pem,), leaf.spiffe_id or "spiffe://x/none",
                           leaf.chain_pem)

    def id(self, service: str) -> str:
        return self.ca.spiffe_id(service)


def make_pki() -> Pki:
    ca = ThrowawayCA("example.mesh")
    other = ThrowawayCA("other.mesh")
    return Pki(ca, ca.issue("web"), ca.issue("db"), ca.issue("api"), other.issue("web"),
               ca.issue("web", expired=True), ca.issue("web", not_yet_valid=True), ca.issue(None))


def client_context(pki: Pki, leaf: Leaf | None, roots: str | None = None) -> ssl.SSLContext:
    """A raw mTLS client (what another sidecar or a native app would use)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=roots or pki.ca.root_pem)
    if leaf is not None:
        from tether.proxy.tls import load_chain_in_memory
        load_chain_in_memory(ctx, leaf.cert_pem + "".join(leaf.chain_pem) + leaf.key_pem)
    return ctx


class EchoApp:
    """A loopback TCP app: optionally sends `banner` first, then echoes everything."""

    def __init__(self, banner: bytes = b"") -> None:
        self.banner = banner
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.accepted = 0
        self.open = 0

    async def start(self) -> "EchoApp":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            if self.banner:
                w.write(self.banner)
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            w.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class BlackHole:
    """A listener whose accept queue is full: further TCP connects hang until they time out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(2):  # backlog 0 holds one, the SYN queue one more
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


def records(engine: Engine) -> list[dict]:
    """Access-log records written so far (the engines in tests log to a StringIO)."""
    engine.access_log.flush()
    return [json.loads(line) for line in engine.access_log.stream.getvalue().splitlines()]


def new_engine(pki: Pki, leaf: Leaf, allow=(), **kw) -> Engine:
    kw.setdefault("access_log", io.StringIO())
    authorize = kw.pop("authorize", None) or StaticAllowList(frozenset(allow), "db")
    return Engine(pki.material(leaf), authorize=authorize, **kw)


async def open_db(pki: Pki, app_port: int, allow=("web",), **kw) -> tuple[Engine, int]:
    """The db sidecar: inbound mTLS on 127.0.0.1:0 -> the app; returns (engine, public port)."""
    eng = new_engine(pki, pki.db, allow=[pki.id(s) for s in allow], **kw)
    lst = await eng.open_inbound(InboundSpec("db", app_port, bind_host="127.0.0.1", connect_timeout=2.0))
    return eng, lst.port


async def open_web(pki: Pki, instances: list[int], expect: str | None = None, **kw) -> tuple[Engine, int]:
    """The web sidecar: upstream 'db' on 127.0.0.1:0 -> the given inbound ports."""
    spec_kw = {k: kw.pop(k) for k in ("policy", "connect_timeout", "max_attempts", "eject_after", "eject_base")
               if k in kw}
    eng = new_engine(pki, pki.web, **kw)
    spec = UpstreamSpec("db", 0, expect or pki.id("db"), **spec_kw)
    lst = await eng.open_upstream(spec, [Instance("127.0.0.1", p) for p in instances])
    return eng, lst.port


async def roundtrip(port: int, payload: bytes = b"ping", banner: int = 0) -> bytes:
    """Connect (plain TCP), read an optional banner, send payload, read it back, close."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = await asyncio.wait_for(r.readexactly(banner), DEADLINE) if banner else b""
        w.write(payload)
        await w.drain()
        back = await asyncio.wait_for(r.readexactly(len(payload)), DEADLINE)
        return head + back
    finally:
        w.close()


async def read_eof(r: asyncio.StreamReader) -> bytes:
    """Everything until EOF (or a reset), bounded by the test deadline."""
    try:
        return await asyncio.wait_for(r.read(), DEADLINE)
    except (ConnectionError, ssl.SSLError):
        return b""


async def tls_connect(pki: Pki, port: int, leaf: Leaf | None, roots: str | None = None):
    """A raw mTLS client straight to an inbound listener (as another sidecar would connect)."""
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, leaf, roots), server_hostname="db"),
        DEADLINE)


async def echo_once(r: asyncio.StreamReader, w: asyncio.StreamWriter, payload: bytes = b"ping") -> bytes:
    w.write(payload)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(payload)), DEADLINE)
