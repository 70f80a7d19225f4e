"""Upstream listeners: exact server identity, round robin, least connections, connect
timeout and retry on another instance, dead instances, passive outlier ejection."""

from __future__ import annotations

import asyncio

import pytest

from tether.testing.ports import held_port
from proxy_testkit import BlackHole, EchoApp, eventually, open_db, open_web, read_eof, records, roundtrip


@pytest.fixture
def dead_port():
    """Loopback ports nobody listens on: held by the test, bound but not listening."""
    held = []

    def make() -> int:
        held.append(held_port())
        return held[-1].port

    yield make
    for port in held:
        port.close()


@pytest.fixture
async def three(pki, engines):
    """Three db instances whose apps announce themselves with a one-byte banner."""
    apps, ports = [], []
    for name in b"ABC":
        a = await EchoApp(bytes([name])).start()
        eng, port = await open_db(pki, a.port)
        engines.append(eng)
        apps.append(a)
        ports.append(port)
    yield ports
    for a in apps:
        await a.stop()


async def test_wrong_server_identity_aborts(pki, app, engines):
    db, db_port = await open_db(pki, app.port)
    web, web_port = await open_web(pki, [db_port], expect=pki.id("payments"))
    engines += [db, web]
    r, w = await asyncio.open_connection("127.0.0.1", web_port)
    w.write(b"secret")
    assert await read_eof(r) == b""
    w.close()
    rec = (await eventually(lambda: records(web)))[0]
    assert rec["result"] == "upstream-identity-mismatch"
    assert rec["reason"] == f"127.0.0.1:{db_port} presented {pki.id('db')}; expected {pki.id('payments')}"
    # the db side saw a valid client that closed without sending: the secret never left web
    inbound = (await eventually(lambda: records(db)))[0]
    assert inbound["bytes_received"] == 0


async def test_round_robin(pki, three, engines):
    web, port = await open_web(pki, three)
    engines.append(web)
    seen = [(await roundtrip(port, b"x", banner=1))[:1] for _ in range(6)]
    assert seen == [b"A", b"B", b"C", b"A", b"B", b"C"]


async def test_least_connections(pki, three, engines):
    web, port = await open_web(pki, three, policy="least_conn")
    engines.append(web)
    pool = web.upstreams["db"].pool
    held = []
    for _ in range(3):  # one long-lived connection on each instance
        r, w = await asyncio.open_connection("127.0.0.1", port)
        held.append((await asyncio.wait_for(r.readexactly(1), 10), w))
    assert sorted(b for b, _ in held) == [b"A", b"B", b"C"]
    # free B: every new connection must go to B while A and C are busy
    b_writer = next(w for b, w in held if b == b"B")
    b_writer.close()
    await eventually(lambda: [m["active"] for m in pool.snapshot(0)] == [1, 0, 1], what="B released")
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(r.readexactly(1), 10) == b"B"
    w.close()
    for _, w in held:
        w.close()


async def test_connect_timeout_then_retry_on_another_instance(pki, app, engines):
    hole = BlackHole()
    try:
        db, db_port = await open_db(pki, app.port)
        web, port = await open_web(pki, [hole.port, db_port], connect_timeout=0.3)
        engines += [db, web]
        assert await roundtrip(port, b"hi") == b"hi"
        rec = (await eventually(lambda: records(web)))[0]
        assert rec["result"] == "allowed" and rec["flags"] == ["retried"]
        assert rec["upstream_address"] == f"127.0.0.1:{db_port}"
    finally:
        hole.close()


async def test_dead_instance_retried_then_ejected(pki, app, engines, dead_port):
    db, db_port = await open_db(pki, app.port)
    dead = dead_port()
    web, port = await open_web(pki, [dead, db_port], eject_after=2, eject_base=60.0)
    engines += [db, web]
    for _ in range(3):
        assert await roundtrip(port, b"hi") == b"hi"
    recs = await eventually(lambda: len(records(web)) == 3 and records(web))
    # attempts: dead (fail 1) -> db; dead (fail 2: ejected) -> db; db only
    assert [r["flags"] for r in recs] == [["retried"], ["retried"], []]
    assert web.stats.ejections["db"] == 1
    assert [m["ejected"] for m in web.upstreams["db"].pool.snapshot(web.loop.time())] == [True, False]


async def test_all_instances_dead(pki, engines, dead_port):
    a, b = dead_port(), dead_port()
    web, port = await open_web(pki, [a, b])
    engines.append(web)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await read_eof(r) == b""
    w.close()
    rec = (await eventually(lambda: records(web)))[0]
    assert rec["result"] == "upstream-connect-failure"
    assert f"127.0.0.1:{a}: Connection refused" in rec["reason"] and f"127.0.0.1:{b}: Connection refused" in rec["reason"]


async def test_no_instances(pki, engines):
    web, port = await open_web(pki, [])
    engines.append(web)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await read_eof(r) == b""
    w.close()
    rec = (await eventually(lambda: records(web)))[0]
    assert rec["result"] == "upstream-connect-failure" and rec["reason"] == "no instances of db"


async def test_new_instances_join_the_pool_live(pki, app, engines):
    web, port = await open_web(pki, [])
    engines.append(web)
    db, db_port = await open_db(pki, app.port)
    engines.append(db)
    from tether.proxy import Instance
    web.update_upstream("db", [Instance("127.0.0.1", db_port)])
    assert await roundtrip(port, b"joined") == b"joined"


async def test_closing_an_upstream_keeps_its_open_connections(pki, app, engines):
    db, db_port = await open_db(pki, app.port)
    web, port = await open_web(pki, [db_port])
    engines += [db, web]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"a")
    assert await asyncio.wait_for(r.readexactly(1), 10) == b"a"
    web.close_upstream("db")
    assert "db" not in web.upstreams and not web.listeners
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    w.write(b"b")
    assert await asyncio.wait_for(r.readexactly(1), 10) == b"b"
    w.close()
    from tether.core.errors import NotFound
    with pytest.raises(NotFound):
        web.close_upstream("db")


async def test_tls_failure_on_one_instance_is_retried_on_another(pki, app, engines):
    from proxy_testkit import new_engine
    from tether.proxy import InboundSpec
    impostor = new_engine(pki, pki.foreign, allow=[pki.id("web")])  # a cert from another trust domain
    lst = await impostor.open_inbound(InboundSpec("db", app.port, bind_host="127.0.0.1"))
    db, db_port = await open_db(pki, app.port)
    web, port = await open_web(pki, [lst.port, db_port])
    engines += [impostor, db, web]
    assert await roundtrip(port, b"hi") == b"hi"
    rec = (await eventually(lambda: records(web)))[0]
    assert rec["result"] == "allowed" and rec["flags"] == ["retried"]
    assert web.stats.handshake_failures[("outbound", "unknown-ca")] == 1
    # the impostor saw our client reject it
    imp = (await eventually(lambda: records(impostor)))[0]
    assert imp["result"] == "handshake-failure" and imp["reason"].startswith("peer-rejected")
