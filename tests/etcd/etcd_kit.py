"""Helpers for tests of several `tether server` processes on one etcd (real processes)."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tether.testing.agent import RunningAgent, start_tether


def start_servers(cluster, n: int = 3, *, prefix: str | None = None, extra: tuple[str, ...] = ()) -> list[RunningAgent]:
    """N servers on one fresh key prefix, started at the same time (they race to initialise it)."""
    url = cluster.url(prefix or f"/t/{uuid.uuid4().hex}/")
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: start_tether("server", "-store", url, *extra), range(n)))


def connected_servers(pid: int, servers: list[RunningAgent]) -> list[int]:
    """Indexes of the servers process `pid` holds an established TCP connection to (from `ss`)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True, check=True).stdout
    ports = {int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
             for m in [re.search(r"\s\S+:(\d+)\s+users:", line)] if m}
    return [i for i, s in enumerate(servers) if int(s.url.rsplit(":", 1)[1]) in ports]


def until(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def kv_index(url: str, key: str) -> int:
    r = httpx.get(f"{url}/v1/kv/{key}", timeout=10)
    return int(r.headers["X-Consul-Index"])
