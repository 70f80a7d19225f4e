"""The sidecar's `Proxy.Mode: "transparent"` hook: add the egress outbound listener.

`tether connect proxy` runs the engine for the registration's explicit listeners; when the
registration says `"Mode": "transparent"`, proxy/sidecar.py calls `transparent_mode(sidecar,
plan)` after opening them (and again after every registration change). The first call opens
the transparent outbound listener on 127.0.0.1:<Proxy.TransparentProxy.OutboundListenerPort,
default 15001> (where `tether connect redirect-traffic -proxy-id` sends the application's
outbound TCP), fed by the same agent; its metrics join the engine's /metrics and its access
log the engine's stream. The listener drains with the sidecar's other watches on stop.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from tether.core.redirect import DEFAULT_OUTBOUND_PORT
from tether.proxy.egress.agent import AgentFeed
from tether.proxy.egress.proxy import EgressProxy
from tether.proxy.egress.stats import EgressCollector

log = logging.getLogger("tether.proxy.egress")

OUTBOUND_HOST = "127.0.0.1"  # iptables REDIRECT of locally generated traffic lands on loopback


def outbound_port(plan) -> int:
    tproxy = ((plan.registration or {}).get("Proxy") or {}).get("TransparentProxy") or {}
    return int(tproxy.get("OutboundListenerPort") or DEFAULT_OUTBOUND_PORT)


async def transparent_mode(sidecar, plan) -> None:
    port = outbound_port(plan)
    running = getattr(sidecar, "egress", None)
    if running is not None:
        if running[2] != port:
            log.warning("TransparentProxy.OutboundListenerPort changed to %d; restart the proxy to move the "
                        "outbound listener (still on %d)", port, running[2])
        return
    opts = sidecar.options
    feed = AgentFeed(opts.agent_addr, plan.service, token=opts.token, virtual_ips=True)
    await feed.start()
    px = EgressProxy(feed.material(), service=plan.service, snapshot=feed.snapshot, mesh=feed.mesh(),
                     access_log=opts.access_log or sys.stderr, log_format=opts.log_format)
    feed.attach(px)
    try:
        await px.open_outbound(OUTBOUND_HOST, port)
    except OSError:
        await feed.close()
        raise
    sidecar.engine.registry.register(EgressCollector(px.stats))
    sidecar.egress = (px, feed, port)
    sidecar._spawn(_run_until_stopped(px, feed, opts.drain_timeout))
    log.info("transparent mode: outbound listener on %s:%d for %s", OUTBOUND_HOST, port, plan.service)


async def _run_until_stopped(px: EgressProxy, feed: AgentFeed, drain_timeout: float) -> None:
    """Lives among the sidecar's watch tasks; when stop() cancels them, drain the listener."""
    try:
        await asyncio.Event().wait()
    finally:
        await feed.close()
        await px.drain(drain_timeout)
