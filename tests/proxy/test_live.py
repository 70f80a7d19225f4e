"""Live changes without a restart: leaf and root rotation under traffic, bad material
(fail static), drain, idle timeout, and the admin endpoint."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest
from proxy_testkit import echo_once, eventually, open_db, open_web, read_eof, records, roundtrip, tls_connect

from tether.core.errors import InvalidInput
from tether.proxy import TlsMaterial
from tether.testing.pki import ThrowawayCA


def served_cert(w: asyncio.StreamWriter) -> str:
    return ssl.DER_cert_to_PEM_cert(w.get_extra_info("ssl_object").getpeercert(True))


async def test_new_leaf_is_used_for_new_handshakes_only(pki, app, engines):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    r1, w1 = await tls_connect(pki, port, pki.web)
    assert served_cert(w1) == pki.db.cert_pem
    fresh = pki.ca.issue("db")
    db.update_tls(pki.material(fresh))
    r2, w2 = await tls_connect(pki, port, pki.web)
    assert served_cert(w2) == fresh.cert_pem
    assert await echo_once(r1, w1, b"old session") == b"old session"  # untouched
    assert await echo_once(r2, w2, b"new session") == b"new session"
    w1.close()
    w2.close()


async def test_root_rotation_with_cross_signing_under_traffic(pki, app, engines):
    db, db_port = await open_db(pki, app.port)
    web, web_port = await open_web(pki, [db_port])
    engines += [db, web]
    r, w = await asyncio.open_connection("127.0.0.1", web_port)
    assert await echo_once(r, w, b"before") == b"before"

    new_ca = ThrowawayCA("example.mesh", name="Throwaway CA 2")
    cross = pki.ca.cross_sign(new_ca)  # lets old-root holders verify new leaves
    both = (pki.ca.root_pem, new_ca.root_pem)
    db_leaf = new_ca.issue("db", chain_pem=(cross,))
    db.update_tls(TlsMaterial(db_leaf.cert_pem, db_leaf.key_pem, both, pki.id("db"), db_leaf.chain_pem))
    # web still trusts only the old root: the cross-signed intermediate bridges it
    assert await roundtrip(web_port, b"db rotated") == b"db rotated"
    web_leaf = new_ca.issue("web", chain_pem=(cross,))
    web.update_tls(TlsMaterial(web_leaf.cert_pem, web_leaf.key_pem, both, pki.id("web"), web_leaf.chain_pem))
    assert await roundtrip(web_port, b"both rotated") == b"both rotated"
    assert await echo_once(r, w, b"still the old session") == b"still the old session"
    w.close()
    results = [rec["result"] for rec in await eventually(lambda: len(records(web)) == 3 and records(web))]
    assert results == ["allowed"] * 3


async def test_bad_material_is_refused_and_the_old_one_keeps_serving(pki, app, engines):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    with pytest.raises(InvalidInput) as err:
        db.update_tls(TlsMaterial("not a cert", "", (), "db"))
    assert "cert_pem" in str(err.value) and "roots_pem" in str(err.value) and "spiffe_id" in str(err.value)
    wrong_key = pki.ca.issue("db")
    with pytest.raises(InvalidInput):
        db.update_tls(TlsMaterial(pki.db.cert_pem, wrong_key.key_pem, (pki.ca.root_pem,), pki.id("db")))
    r, w = await tls_connect(pki, port, pki.web)
    assert served_cert(w) == pki.db.cert_pem
    assert await echo_once(r, w) == b"ping"
    w.close()


async def test_config_source_failure_is_logged_once_and_exposed(pki, app, engines, caplog):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    with caplog.at_level(logging.WARNING, logger="tether.proxy"):
        db.config_source_failed("agent", "connection refused")
        db.config_source_failed("agent", "connection refused")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "serving last known config" in warnings[0]
    assert db.stats.config_stale == 1
    r, w = await tls_connect(pki, port, pki.web)
    assert await echo_once(r, w) == b"ping"  # fail static: still serving
    w.close()
    db.config_source_ok("agent")
    assert db.stats.config_stale == 0


async def test_drain_lets_live_connections_finish(pki, app, engines):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)
    await echo_once(r, w)
    drain = asyncio.ensure_future(db.drain(10.0))
    await eventually(lambda: db.draining)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert await echo_once(r, w, b"finishing up") == b"finishing up"
    w.close()
    assert await drain == 0
    assert records(db)[0]["result"] == "allowed"


async def test_drain_deadline_cuts_what_is_left(pki, app, engines):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)
    await echo_once(r, w)
    assert await db.drain(0.2) == 1
    assert await read_eof(r) == b""
    w.close()
    rec = records(db)[0]
    assert rec["result"] == "drained" and rec["reason"] == "still open at the drain deadline (0.2s)"


async def test_idle_timeout(pki, app, engines):
    db, port = await open_db(pki, app.port, idle_timeout=0.2)
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)
    await echo_once(r, w)
    assert await read_eof(r) == b""  # nothing sent: the proxy closes it
    w.close()
    rec = (await eventually(lambda: records(db)))[0]
    assert rec["result"] == "idle-timeout" and rec["flags"] == ["idle-timeout"]


async def http_get(port: int, path: str) -> tuple[int, str]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(r.read(), 10)
    w.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_admin_metrics_and_readiness(pki, app, engines):
    db, port = await open_db(pki, app.port)
    engines.append(db)
    _, admin = await db.open_admin("127.0.0.1", 0)
    r, w = await tls_connect(pki, port, pki.web)
    await echo_once(r, w, b"12345")
    w.close()
    r, w = await tls_connect(pki, port, pki.api)  # denied
    await read_eof(r)
    w.close()
    r, w = await asyncio.open_connection("127.0.0.1", port)  # plaintext
    w.write(b"hello\r\n")
    await read_eof(r)
    w.close()
    await eventually(lambda: len(records(db)) == 3)
    status, text = await http_get(admin, "/metrics")
    assert status == 200
    for line in ('tether_proxy_connections_total{direction="inbound",result="allowed"} 1.0',
                 'tether_proxy_connections_total{direction="inbound",result="denied"} 1.0',
                 'tether_proxy_connections_total{direction="inbound",result="handshake-failure"} 1.0',
                 'tether_proxy_connections_active{direction="inbound"} 0.0',
                 'tether_proxy_bytes_total{direction="inbound",flow="received"} 5.0',
                 'tether_proxy_bytes_total{direction="inbound",flow="sent"} 5.0',
                 'tether_proxy_handshake_failures_total{direction="inbound",reason="plaintext-client"} 1.0',
                 f'tether_proxy_denials_total{{destination="db",source="{pki.id("api")}"}} 1.0',
                 'tether_proxy_connect_latency_seconds_count{direction="inbound"} 1.0',
                 "tether_proxy_config_stale 0.0"):
        assert line in text, line
    assert await http_get(admin, "/ready") == (200, "ready\n")
    assert (await http_get(admin, "/nope"))[0] == 404
    await db.drain(1.0)
    assert await http_get(admin, "/ready") == (503, "draining\n")
