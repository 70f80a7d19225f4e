"""The egress gateway's mesh listener caps its pending handshakes like a sidecar's inbound one
(core/admission.py): an idle flood is shed, a sidecar's handshake still completes."""

from __future__ import annotations

import asyncio
import socket

from tether.proxy.egress import EgressProxy

from egress_kit import LogSink, material, mesh_client_context, wait_log

CAP = 4


async def test_an_idle_flood_is_shed_and_a_sidecar_still_gets_its_handshake(mesh_ca):
    gw = EgressProxy(material(mesh_ca, "egress-gateway"), service="egress-gateway", access_log=LogSink(),
                     max_pending_handshakes=CAP)
    host, port = await gw.open_gateway("127.0.0.1", 0)
    lst = gw.listeners[0]
    idle = []
    try:
        for _ in range(3 * CAP):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, port))
            idle.append(s)
        deadline = asyncio.get_running_loop().time() + 5
        while not lst._gated:
            assert asyncio.get_running_loop().time() < deadline, "the gateway listener never reached its cap"
            await asyncio.sleep(0.01)
        assert len(lst.gate.pending) == CAP
        _, w = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=mesh_client_context(mesh_ca, "web"), server_hostname="egress-gateway"), 10)
        w.close()  # the mesh handshake completed: the sidecar got through the flood
        rec = await wait_log(gw, lambda r: r["reason"].startswith("shed-under-pressure"))
        assert rec["result"] == "handshake-failure" and f"while {CAP} handshakes were pending" in rec["reason"]
    finally:
        for s in idle:
            s.close()
        await gw.close()
