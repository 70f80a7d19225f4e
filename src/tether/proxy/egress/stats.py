"""Egress counters and their Prometheus families.

Plain ints updated once per connection (at accept and at close, never per chunk), turned
into metric families only when /metrics is scraped, in a registry the caller owns (the
gateway's own admin endpoint, or the sidecar engine's registry).

    tether_egress_connections_total{role, route, result}
    tether_egress_connections_active{role}
    tether_egress_bytes_total{role, flow}
    tether_egress_blocked_total{role, source, destination}   what was blocked, by whom
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: Distinct (source, destination) pairs kept for the blocked counter; later ones are
#: counted under destination="other" so a scan of random hosts cannot grow the series
#: without bound (the access log still names every one).
MAX_BLOCKED_SERIES = 1000


class EgressStats:
    def __init__(self) -> None:
        self.connections: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.active: defaultdict[str, int] = defaultdict(int)
        self.bytes: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.blocked: defaultdict[tuple[str, str, str], int] = defaultdict(int)

    def count_blocked(self, role: str, source: str, destination: str) -> None:
        key = (role, source, destination)
        if key not in self.blocked and len(self.blocked) >= MAX_BLOCKED_SERIES:
            key = (role, source, "other")
        self.blocked[key] += 1

    def count_closed(self, role: str, route: str, result: str, received: int, sent: int) -> None:
        self.active[role] -= 1
        self.connections[(role, route, result)] += 1
        if received:
            self.bytes[(role, "received")] += received
        if sent:
            self.bytes[(role, "sent")] += sent


class EgressCollector:
    def __init__(self, stats: EgressStats) -> None:
        self.stats = stats

    def collect(self):
        s = self.stats
        c = CounterMetricFamily("tether_egress_connections", "Egress connections by role, route and how they ended.",
                                labels=["role", "route", "result"])
        for key, v in list(s.connections.items()):
            c.add_metric(list(key), v)
        yield c
        g = GaugeMetricFamily("tether_egress_connections_active", "Egress connections open now.", labels=["role"])
        for role, v in list(s.active.items()):
            g.add_metric([role], v)
        yield g
        b = CounterMetricFamily("tether_egress_bytes", "Payload bytes relayed (counted at close).",
                                labels=["role", "flow"])
        for key, v in list(s.bytes.items()):
            b.add_metric(list(key), v)
        yield b
        d = CounterMetricFamily("tether_egress_blocked", "Connections refused by egress policy, naming the "
                                "destination (SNI host or IP:port).", labels=["role", "source", "destination"])
        for key, v in list(s.blocked.items()):
            d.add_metric(list(key), v)
        yield d


def register_collector(stats: EgressStats, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Add the egress families to `registry` (a new one if None) and return it."""
    registry = registry or CollectorRegistry(auto_describe=False)
    registry.register(EgressCollector(stats))
    return registry
