"""Native services (tether.sdk) talking mutual TLS through a real dev agent and its CA."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest

from tether.core.errors import PermissionDenied
from tether.sdk import Service
from tether.testing.agent import start_dev_agent


class NativeServer:
    """A mesh server written with the SDK: TLS with client certs, then authorize, then echo."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = svc.server_ssl_context()
        self.decisions: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._handle(conn)
            except OSError:  # a client that is refused or resets: next connection
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        tls = self.ctx.wrap_socket(conn, server_side=True)
        try:
            decision = self.svc.authorize(tls)
        except Exception:  # the Service was closed under a connection in flight
            tls.close()
            return
        self.decisions.append(decision)
        if decision.allowed:
            tls.sendall(b"echo:" + tls.recv(100))
        tls.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def agent():
    agent = start_dev_agent()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def api(agent):
    return httpx.Client(base_url=agent.url)


@pytest.fixture(scope="module")
def db(agent, api):
    svc = Service("db", agent_addr=agent.addr)
    server = NativeServer(svc)
    api.put("/v1/agent/service/register", json={"Name": "db", "Port": server.port, "Connect": {"Native": True}}).raise_for_status()
    yield server
    server.close()
    svc.close()


@pytest.fixture(scope="module")
def web(agent):
    with Service("web", agent_addr=agent.addr) as svc:
        yield svc


def intention(api, action):
    r = api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"}, json={"Action": action})
    assert r.status_code == 200, r.text


def test_native_client_reaches_native_server_with_verified_identity(web, db, api):
    intention(api, "allow")
    tls = web.connect("db")
    tls.sendall(b"hi")
    assert tls.recv(100) == b"echo:hi"
    assert tls.getpeercert()["subjectAltName"] == (("URI", web.expected_id("db")),)
    assert db.decisions[-1].allowed


def test_intention_flip_denies_new_connections(web, db, api):
    intention(api, "deny")
    try:
        tls = web.connect("db")
        tls.sendall(b"hi")
        assert tls.recv(100) == b""  # the server closed it: not authorized
        assert not db.decisions[-1].allowed and "deny" in db.decisions[-1].reason
    finally:
        intention(api, "allow")


async def test_async_dial(web, db, api):
    intention(api, "allow")
    reader, writer = await web.dial("db")
    writer.write(b"async")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(100), 10) == b"echo:async"
    writer.close()


def test_a_server_with_another_identity_is_refused(agent, api, web):
    impostor = Service("cache", agent_addr=agent.addr)  # a real mesh cert, but for "cache"
    server = NativeServer(impostor)
    try:
        api.put("/v1/agent/service/register",
                json={"Name": "payments", "Port": server.port, "Connect": {"Native": True}}).raise_for_status()
        with pytest.raises(PermissionDenied, match="svc/cache, not .*svc/payments"):
            web.connect("payments")
    finally:
        server.close()
        impostor.close()


def test_server_context_requires_a_client_certificate(db):
    """A client without a certificate is refused by the TLS layer itself: it gets the
    certificate-required alert, and nothing reaches the server's authorization."""
    import ssl

    plain = ssl.create_default_context()
    plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
    before = len(db.decisions)
    with socket.create_connection(("127.0.0.1", db.port), timeout=5) as raw:
        with plain.wrap_socket(raw) as tls:  # TLS 1.3: the client's side of the handshake completes ...
            # ... then the server's alert arrives. (Nothing is sent first: data the server never
            # reads would turn its close into a reset that can overtake the alert.)
            with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
                tls.recv(10)
    assert len(db.decisions) == before