"""Upstream instances with host names resolved to IP addresses (the engine dials IPs only)."""

from __future__ import annotations

import asyncio
import logging
import socket

log = logging.getLogger("tether.proxy.sidecar")


async def resolve_instances(instances: list) -> list:
    """Instances with host names resolved to IP addresses (the engine dials IPs only)."""
    out = []
    loop = asyncio.get_running_loop()
    for inst in instances:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in inst.host else socket.AF_INET, inst.host)
            out.append(inst)
            continue
        except OSError:
            pass
        try:
            info = await loop.getaddrinfo(inst.host, inst.port, type=socket.SOCK_STREAM)
        except OSError as e:
            log.warning("cannot resolve upstream instance %s: %s", inst.host, e)
            continue
        out.append(type(inst)(info[0][4][0], inst.port, inst.spiffe_id))
    return out
