"""Helpers for tests of several `tether server` processes on one etcd (real processes)."""

from __future__ import annotations

import time

import httpx

from tether.testing.etcd import connected_servers, start_servers  # noqa: F401  (the tests' one import)


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
