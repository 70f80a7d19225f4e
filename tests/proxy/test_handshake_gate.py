"""The inbound listener's cap on pending handshakes (core/admission.py, proxy/admission.py):
at the cap it stops accepting, sheds the silent connections, and real clients get through."""

from __future__ import annotations

import socket

from proxy_testkit import echo_once, eventually, new_engine, records, tls_connect

from tether.proxy import InboundSpec

CAP = 8


def idle_connections(port: int, n: int) -> list[socket.socket]:
    """Connect and say nothing (non-blocking: those past the backlog wait for the kernel)."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


async def test_at_the_cap_it_stops_accepting_sheds_the_silent_and_serves_a_real_client(pki, app, engines):
    db = new_engine(pki, pki.db, allow=[pki.id("web")])
    engines.append(db)
    lst = await db.open_inbound(InboundSpec("db", app.port, bind_host="127.0.0.1", max_pending_handshakes=CAP))
    idle = idle_connections(lst.port, 3 * CAP)
    try:
        # 1. Never more than CAP accepted at once; at the cap the listening socket is left alone.
        await eventually(lambda: lst._gated, what="the listener to reach its cap")
        assert len(lst.gate.pending) == CAP and db.stats.active["inbound"] == CAP
        # 2. A real client gets through: the silent ones are shed to make room.
        r, w = await tls_connect(pki, lst.port, pki.web)
        assert await echo_once(r, w) == b"ping"
        w.close()
        await eventually(lambda: db.stats.handshake_failures[("inbound", "shed-under-pressure")] >= CAP)
        shed = [rec for rec in records(db) if rec["reason"].startswith("shed-under-pressure")]
        assert shed[0]["result"] == "handshake-failure"
        assert shed[0]["reason"] == f"shed-under-pressure: silent for 0.25s while {CAP} handshakes were pending"
        assert db.stats.active["inbound"] <= CAP
    finally:
        for s in idle:
            s.close()
    # 3. Once the flood is gone the listener accepts as before.
    await eventually(lambda: not lst._gated and not lst.gate.pending, what="the gate to empty")
    r, w = await tls_connect(pki, lst.port, pki.web)
    assert await echo_once(r, w, b"after") == b"after"
    w.close()


async def test_a_changed_cap_applies_to_the_open_listener(pki, app, engines):
    db = new_engine(pki, pki.db, allow=[pki.id("web")])
    engines.append(db)
    lst = await db.open_inbound(InboundSpec("db", app.port, bind_host="127.0.0.1", max_pending_handshakes=CAP))
    idle = idle_connections(lst.port, 4)
    try:
        await eventually(lambda: len(lst.gate.pending) == 4)
        lst.gate.set_cap(4)  # what a registration change does (Proxy.Config.max_pending_handshakes)
        assert lst._gated
        r, w = await tls_connect(pki, lst.port, pki.web)
        assert await echo_once(r, w) == b"ping"
        w.close()
    finally:
        for s in idle:
            s.close()


async def test_a_closed_listener_is_not_reopened_by_its_gate(pki, app, engines):
    db = new_engine(pki, pki.db, allow=[pki.id("web")], handshake_timeout=0.3)
    engines.append(db)
    lst = await db.open_inbound(InboundSpec("db", app.port, bind_host="127.0.0.1", max_pending_handshakes=2))
    idle = idle_connections(lst.port, 2)
    try:
        await eventually(lambda: lst._gated)
        db.close_listener(lst)
        await eventually(lambda: not lst.gate.pending, what="the pending handshakes to time out")
        assert lst.closed and not lst._reading
    finally:
        for s in idle:
            s.close()
