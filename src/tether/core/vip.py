"""Virtual IPs for transparent proxying: one stable address per service name.

An application that knows nothing about the mesh dials `db.virtual.tether` (or
`db.service.tether`): DNS answers with db's virtual IP, iptables sends the connection to
the sidecar, and the sidecar maps the original destination back to `db`. Addresses come
from 240.0.0.0/4 (reserved, never routed), as Consul's do. A name keeps its address for
the life of the cluster, so a cached DNS answer never points at another service.
"""

from __future__ import annotations

import ipaddress

from tether.core.errors import Conflict

VIRTUAL_NETWORK = ipaddress.IPv4Network("240.0.0.0/4")
TAGGED_ADDRESS = "consul-virtual"  # the TaggedAddresses key Consul uses for the same thing


def format_virtual_ip(ordinal: int) -> str:
    """The ordinal-th virtual IP (1-based; skips the network address)."""
    if not 1 <= ordinal < VIRTUAL_NETWORK.num_addresses - 1:
        raise Conflict("the virtual IP range 240.0.0.0/4 is exhausted")
    return str(VIRTUAL_NETWORK.network_address + ordinal)


def is_virtual_ip(address: str) -> bool:
    try:
        return ipaddress.IPv4Address(address) in VIRTUAL_NETWORK
    except ValueError:
        return False
