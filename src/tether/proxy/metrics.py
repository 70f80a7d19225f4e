"""Proxy counters and their Prometheus exposition on the admin port.

Connections update plain ints in `ProxyStats` (a dict increment at accept and at close,
never per chunk: bytes are added once when a connection ends). A custom collector turns
them into Prometheus families only when /metrics is scraped, in the engine's own
`CollectorRegistry` (never the global one, so several engines can live in one process).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger("tether.proxy")

#: Connect-latency buckets (seconds): loopback TCP connects take ~50 µs, a full mTLS dial
#: ~2-5 ms on a busy 2-core box, a dead peer hits the 5 s default timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Admin requests larger than this are refused (the admin port only serves tiny GETs).
MAX_ADMIN_REQUEST = 8192


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value
        self.n += 1


class ProxyStats:
    """Every number the proxy exposes, as plain Python containers."""

    def __init__(self) -> None:
        self.connections = defaultdict(int)  # (direction, result) -> total
        self.active = defaultdict(int)  # direction -> open now
        self.bytes = defaultdict(int)  # (direction, flow) -> total
        self.handshake_failures = defaultdict(int)  # (direction, reason) -> total
        self.denials = defaultdict(int)  # (source, destination) -> total
        self.authz_terminations = defaultdict(int)  # destination -> total
        self.ejections = defaultdict(int)  # upstream -> total
        self.connect_latency = defaultdict(Histogram)  # direction -> histogram
        self.config_stale = 0


class StatsCollector:
    """prometheus_client collector reading a ProxyStats at scrape time."""

    def __init__(self, stats: ProxyStats) -> None:
        self.stats = stats

    def collect(self):
        s = self.stats
        c = CounterMetricFamily("tether_proxy_connections", "Connections handled, by how they ended.",
                                labels=["direction", "result"])
        for (d, r), v in list(s.connections.items()):
            c.add_metric([d, r], v)
        yield c
        g = GaugeMetricFamily("tether_proxy_connections_active", "Connections open now.", labels=["direction"])
        for d, v in list(s.active.items()):
            g.add_metric([d], v)
        yield g
        b = CounterMetricFamily("tether_proxy_bytes", "Payload bytes relayed (counted when a connection closes).",
                                labels=["direction", "flow"])
        for (d, f), v in list(s.bytes.items()):
            b.add_metric([d, f], v)
        yield b
        h = CounterMetricFamily("tether_proxy_handshake_failures", "Failed TLS handshakes, by reason.",
                                labels=["direction", "reason"])
        for (d, r), v in list(s.handshake_failures.items()):
            h.add_metric([d, r], v)
        yield h
        dn = CounterMetricFamily("tether_proxy_denials", "Connections denied by authorization.",
                                 labels=["source", "destination"])
        for (src, dst), v in list(s.denials.items()):
            dn.add_metric([src, dst], v)
        yield dn
        t = CounterMetricFamily("tether_proxy_authz_terminate", "Live connections closed after a policy change.",
                                labels=["destination"])
        for dst, v in list(s.authz_terminations.items()):
            t.add_metric([dst], v)
        yield t
        e = CounterMetricFamily("tether_proxy_upstream_ejections", "Instances ejected by outlier detection.",
                                labels=["upstream"])
        for up, v in list(s.ejections.items()):
            e.add_metric([up], v)
        yield e
        lat = HistogramMetricFamily("tether_proxy_connect_latency_seconds",
                                    "Time to connect to the next hop (TCP, plus mTLS for upstreams).",
                                    labels=["direction"])
        for d, hist in list(s.connect_latency.items()):
            acc, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), hist.counts):
                acc += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), acc))
            lat.add_metric([d], buckets, hist.total)
        yield lat
        yield GaugeMetricFamily("tether_proxy_config_stale",
                                "1 while the config source is unreachable and the last known config is served.",
                                value=s.config_stale)


def make_registry(stats: ProxyStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    return registry


async def serve_admin(registry: CollectorRegistry, host: str, port: int, ready) -> asyncio.AbstractServer:
    """Admin HTTP endpoint: GET /metrics (Prometheus text), GET /ready (200, or 503 when draining).

    `ready` is a zero-argument callable. HTTP/1.0 style: one request per connection.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method != "GET":
                status, body, ctype = "405 Method Not Allowed", b"only GET\n", "text/plain"
            elif path == "/metrics":
                status, body, ctype = "200 OK", generate_latest(registry), "text/plain; version=0.0.4"
            elif path == "/ready":
                ok = ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                body, ctype = (b"ready\n" if ok else b"draining\n"), "text/plain"
            else:
                status, body, ctype = "404 Not Found", b"try /metrics or /ready\n", "text/plain"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    # Bind ourselves: given a host name, the loop would resolve it on a thread pool (uvloop
    # starts four threads for that), which a sidecar does not need.
    from tether.netutil import open_listen_socket
    return await asyncio.start_server(handle, sock=open_listen_socket(host, port), limit=MAX_ADMIN_REQUEST)
