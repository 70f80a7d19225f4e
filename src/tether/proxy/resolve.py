"""Upstream instances with host names resolved to IP addresses (the engine dials IPs only)."""

from __future__ import annotations

import logging

from tether.netutil import resolve_ip

log = logging.getLogger("tether.proxy.sidecar")


async def resolve_instances(instances: list) -> list:
    """Instances with host names resolved to IP addresses; one that does not resolve is left
    out (and logged), the others are kept."""
    out = []
    for inst in instances:
        try:
            ip = await resolve_ip(inst.host, inst.port)
        except OSError as e:
            log.warning("cannot resolve upstream instance %s: %s", inst.host, e)
            continue
        out.append(inst if ip == inst.host else type(inst)(ip, inst.port, inst.spiffe_id))
    return out
