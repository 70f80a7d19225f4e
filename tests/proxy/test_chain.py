"""The two-hop chain end to end: client -> web's upstream listener -> mTLS -> db's inbound -> app."""

from __future__ import annotations

import asyncio

from proxy_testkit import eventually, open_db, open_web, records, roundtrip


async def test_roundtrip_through_both_sidecars(pki, app, engines):
    db, db_port = await open_db(pki, app.port)
    web, web_port = await open_web(pki, [db_port])
    engines += [db, web]
    assert await roundtrip(web_port, b"hello mesh") == b"hello mesh"
    await eventually(lambda: records(db) and records(web), what="access logs")
    (inb,), (out,) = records(db), records(web)
    assert inb["direction"] == "inbound" and inb["result"] == "allowed"
    assert inb["source"] == pki.id("web") and inb["destination"] == "db"
    assert inb["upstream_address"] == f"127.0.0.1:{app.port}"
    assert inb["bytes_received"] == inb["bytes_sent"] == len(b"hello mesh")
    assert "Matched static allow" in inb["reason"]
    assert out["direction"] == "outbound" and out["result"] == "allowed"
    assert out["source"] == pki.id("web") and out["destination"] == "db"
    assert out["upstream_address"] == f"127.0.0.1:{db_port}"
    assert out["bytes_received"] == out["bytes_sent"] == len(b"hello mesh")
    for rec in (inb, out):
        assert rec["start_time"].endswith("Z") and rec["duration_ms"] >= 0 and rec["flags"] == []


async def test_bulk_and_half_close(pki, app, engines):
    """1 MiB each way; the client half-closes and still receives every echoed byte."""
    db, db_port = await open_db(pki, app.port)
    web, web_port = await open_web(pki, [db_port])
    engines += [db, web]
    payload = bytes(range(256)) * 4096
    r, w = await asyncio.open_connection("127.0.0.1", web_port)

    async def send():
        w.write(payload)
        await w.drain()
        w.write_eof()

    sender = asyncio.ensure_future(send())
    got = await asyncio.wait_for(r.read(), 10)
    await sender
    w.close()
    assert got == payload
    await eventually(lambda: records(db) and records(web), what="access logs")
    assert records(web)[0]["bytes_received"] == len(payload) == records(web)[0]["bytes_sent"]
    assert records(db)[0]["result"] == "allowed"


async def test_a_connection_the_destination_refuses_is_logged_as_refused_on_both_sides(pki, app, engines):
    """db's sidecar denies web: web's log says upstream-refused, not allowed (issue 17)."""
    db, db_port = await open_db(pki, app.port, allow=("api",))
    web, web_port = await open_web(pki, [db_port])
    engines += [db, web]
    r, w = await asyncio.open_connection("127.0.0.1", web_port)
    w.write(b"let me in")
    assert await asyncio.wait_for(r.read(), 10) == b""
    w.close()
    await eventually(lambda: records(db) and records(web), what="access logs")
    (inb,), (out,) = records(db), records(web)
    assert inb["result"] == "denied"
    assert out["result"] == "upstream-refused" and out["bytes_sent"] == 0
    assert f"127.0.0.1:{db_port} closed the connection after the handshake" in out["reason"]


async def test_an_app_that_closes_without_a_word_is_not_a_refusal(pki, engines):
    """The destination's app accepts and closes at once: the sidecar ends the session with a
    close_notify, so the caller's log says allowed."""
    async def close_at_once(reader, writer):
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    try:
        db, db_port = await open_db(pki, server.sockets[0].getsockname()[1])
        web, web_port = await open_web(pki, [db_port])
        engines += [db, web]
        r, w = await asyncio.open_connection("127.0.0.1", web_port)
        assert await asyncio.wait_for(r.read(), 10) == b""
        w.close()
        await eventually(lambda: records(db) and records(web), what="access logs")
        assert records(db)[0]["result"] == "allowed"
        assert records(web)[0]["result"] == "allowed", records(web)[0]
    finally:
        server.close()
