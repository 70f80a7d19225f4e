"""Bad clients and faults on the public listener: each is refused with its own access-log
reason and metric, never takes the proxy down, and leaks no file descriptor."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tether.testing.ports import held_port
from proxy_testkit import (client_context, echo_once, eventually, fd_count, open_db, read_eof, records,
                           tls_connect)


def client_hello(pki) -> bytes:
    """The first flight of a real TLS client (a complete ClientHello record)."""
    obj = client_context(pki, pki.web).wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="db")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def send_raw(port: int, data: bytes, close_after: bool = True) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if data:
        w.write(data)
        await w.drain()
    if close_after and not data:
        w.close()
        return b""
    got = await read_eof(r)
    w.close()
    return got


async def truncated(port: int, hello: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(hello[:60])
    await w.drain()
    w.write_eof()
    got = await read_eof(r)
    w.close()
    return got


async def bad_cert(pki, port: int, leaf) -> bytes:
    try:
        r, w = await tls_connect(pki, port, leaf)
    except (ssl.SSLError, ConnectionError):
        return b""
    w.write(b"hi")
    got = await read_eof(r)
    w.close()
    return got


def last_failure(db) -> tuple[str, str]:
    rec = records(db)[-1]
    assert rec["result"] == "handshake-failure", rec
    reason, _, detail = rec["reason"].partition(": ")
    return reason, detail


CASES = {
    "plaintext-client": lambda pki, port: send_raw(port, b"hello there\r\n"),
    "http-client": lambda pki, port: send_raw(port, b"GET / HTTP/1.1\r\nHost: db\r\n\r\n"),
    "closed-before-hello": lambda pki, port: send_raw(port, b""),
    "truncated-hello": lambda pki, port: truncated(port, client_hello(pki)),
    "unknown-ca": lambda pki, port: bad_cert(pki, port, pki.foreign),
    "cert-expired": lambda pki, port: bad_cert(pki, port, pki.expired),
    "cert-not-yet-valid": lambda pki, port: bad_cert(pki, port, pki.not_yet_valid),
    "no-client-cert": lambda pki, port: bad_cert(pki, port, None),
}


@pytest.mark.parametrize("reason", list(CASES))
async def test_bad_client_is_refused_with_its_reason(pki, app, engines, reason):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    assert await CASES[reason](pki, port) == b""
    await eventually(lambda: records(db), what="access log line")
    assert last_failure(db)[0] == reason
    assert db.stats.handshake_failures[("inbound", reason)] == 1
    assert app.accepted == 0
    # the proxy is still up and serving
    r, w = await tls_connect(pki, port, pki.web)
    assert await echo_once(r, w) == b"ping"
    w.close()


async def test_stall_mid_handshake_times_out(pki, app, engines):
    db, port = await open_db(pki, app.port, handshake_timeout=0.3)
    engines.append(db)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(client_hello(pki)[:40])  # then nothing more
    assert await read_eof(r) == b""
    w.close()
    await eventually(lambda: records(db))
    assert last_failure(db) == ("handshake-timeout", "no complete handshake within 0.3s")
    assert db.stats.handshake_failures[("inbound", "handshake-timeout")] == 1


async def test_certificate_without_spiffe_id_is_denied(pki, app, engines):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    assert await bad_cert(pki, port, pki.no_uri) == b""
    rec = (await eventually(lambda: records(db)))[0]
    assert rec["result"] == "denied" and rec["source"] is None
    assert rec["reason"] == "client certificate has no SPIFFE URI SAN"
    assert db.stats.denials[("unknown", "db")] == 1


async def test_dead_local_app(pki, engines):
    with held_port() as dead:  # bound, never listening: connections to it are refused
        db, port = await open_db(pki, dead.port)
        engines.append(db)
        r, w = await tls_connect(pki, port, pki.web)
        w.write(b"anyone?")
        assert await read_eof(r) == b""
        w.close()
        rec = (await eventually(lambda: records(db)))[0]
        assert rec["result"] == "upstream-connect-failure"
        assert rec["reason"] == f"local app 127.0.0.1:{dead.port}: Connection refused"


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_a_thousand_bad_connections_leak_no_descriptor(pki, app, engines):
    db, port = await open_db(pki, app.port, handshake_timeout=2.0)
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)  # warm up: contexts, caches
    await echo_once(r, w)
    w.close()
    await eventually(lambda: db.stats.active["inbound"] == 0)
    baseline = fd_count()
    kinds = list(CASES.values()) + [lambda pki, port: bad_cert(pki, port, pki.api)]  # + no permit
    sem = asyncio.Semaphore(32)

    async def one(i):
        async with sem:
            await kinds[i % len(kinds)](pki, port)

    await asyncio.gather(*(one(i) for i in range(1000)))
    await eventually(lambda: db.stats.active["inbound"] == 0, what="all bad connections closed")
    await eventually(lambda: fd_count() <= baseline, what=f"fd count back to {baseline}")
    assert sum(db.stats.connections.values()) == 1001
    r, w = await tls_connect(pki, port, pki.web)
    assert await echo_once(r, w) == b"ping"
    w.close()
