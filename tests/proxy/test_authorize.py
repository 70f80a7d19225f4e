"""Inbound authorization: allow, deny with the rule, audit, a broken authorizer, and a live
policy flip that closes exactly the connections that lost their permit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy_testkit import echo_once, eventually, open_db, read_eof, records, tls_connect

from tether.proxy.authz import StaticAllowList


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    audit: bool = False


async def test_allowed_identity_reaches_the_app(pki, app, engines):
    db, port = await open_db(pki, app.port, allow=("web",))
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)
    assert await echo_once(r, w) == b"ping"
    w.close()
    rec = (await eventually(lambda: records(db)))[0]
    assert rec["result"] == "allowed" and rec["source"] == pki.id("web")


async def test_identity_without_permit_is_denied_and_logged(pki, app, engines):
    db, port = await open_db(pki, app.port, allow=("web",))
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.api)
    w.write(b"let me in")
    assert await read_eof(r) == b""
    w.close()
    rec = (await eventually(lambda: records(db)))[0]
    assert rec["result"] == "denied" and rec["source"] == pki.id("api")
    assert rec["reason"] == f"no static allow entry for {pki.id('api')} (default deny)"
    assert db.stats.denials[(pki.id("api"), "db")] == 1
    assert app.accepted == 0  # the app never saw the connection


async def test_authorizer_gets_source_peer_ip_and_port(pki, app, engines):
    seen = []

    def authorize(source, ip, port):
        seen.append((source, ip, port))
        return Verdict(True, "ok", audit=True)

    db, port = await open_db(pki, app.port, authorize=authorize)
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)
    await echo_once(r, w)
    w.close()
    assert seen == [(pki.id("web"), "127.0.0.1", port)]
    rec = (await eventually(lambda: records(db)))[0]
    assert rec["flags"] == ["audit"] and rec["reason"] == "ok"


async def test_broken_authorizer_fails_closed(pki, app, engines):
    def authorize(source, ip, port):
        raise RuntimeError("policy cache corrupt")

    db, port = await open_db(pki, app.port, authorize=authorize)
    engines.append(db)
    r, w = await tls_connect(pki, port, pki.web)
    assert await read_eof(r) == b""
    w.close()
    rec = (await eventually(lambda: records(db)))[0]
    assert rec["result"] == "denied" and rec["reason"] == "authorizer error: RuntimeError"


async def test_policy_flip_closes_denied_live_connections_and_keeps_allowed_ones(pki, app, engines):
    db, port = await open_db(pki, app.port, allow=("web", "api"))
    engines.append(db)
    web_r, web_w = await tls_connect(pki, port, pki.web)
    api_r, api_w = await tls_connect(pki, port, pki.api)
    assert await echo_once(web_r, web_w) == b"ping"
    assert await echo_once(api_r, api_w) == b"ping"

    # web keeps talking while the policy changes under it
    stop = asyncio.Event()
    done = [0]

    async def chatter():
        while not stop.is_set():
            n = done[0]
            assert await echo_once(web_r, web_w, b"x%d" % n) == b"x%d" % n
            done[0] += 1

    talker = asyncio.ensure_future(chatter())
    await eventually(lambda: done[0] >= 3, what="traffic before the flip")
    closed = db.update_authorizer(StaticAllowList(frozenset({pki.id("web")}), "db"))
    assert closed == 1
    assert await read_eof(api_r) == b""  # api's existing connection was cut
    before = done[0]
    await eventually(lambda: done[0] >= before + 3, what="traffic after the flip")
    stop.set()
    await talker
    assert await echo_once(web_r, web_w, b"still here") == b"still here"
    web_w.close()
    api_w.close()
    recs = await eventually(lambda: len(records(db)) == 2 and records(db))
    api_rec = next(r for r in recs if r["source"] == pki.id("api"))
    assert api_rec["result"] == "authz-terminated"
    assert api_rec["reason"] == f"no static allow entry for {pki.id('api')} (default deny)"
    assert db.stats.authz_terminations["db"] == 1
    assert next(r for r in recs if r["source"] == pki.id("web"))["result"] == "allowed"
    # and new connections from api are refused from now on
    r, w = await tls_connect(pki, port, pki.api)
    assert await read_eof(r) == b""
    w.close()
