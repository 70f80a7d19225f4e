"""Identity benchmark: leaf signing rate on one core, beside the raw ECDSA P-256 rate, and
the latency of a cached leaf fetch.

    sign rate   CAService.sign (the server's path: rate limiter off, CSR parse + checks +
                certificate build + signature), provider.sign_leaf alone, and a bare
                ECDSA P-256 signature from `cryptography` on the same machine. One thread,
                so one core.
    fetch       GET /v1/agent/connect/ca/leaf/web on a real `tether agent -dev` subprocess
                (warm cache, one keep-alive connection), and LeafCache.leaf() in memory.

    python -m bench.identity        (BENCH_IDENTITY_SECONDS=3 per measurement)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Awaitable, Callable

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import print_table, summary, write_result
from tether.agent.leafcache import LeafCache
from tether.agent.link import LocalLink
from tether.ca import x509 as tx
from tether.control.server import ControlPlane
from tether.core.spiffe import service_id
from tether.store.cached import MemoryStore
from tether.testing.agent import start_dev_agent

SECONDS = float(os.environ.get("BENCH_IDENTITY_SECONDS", "3"))
MAX_OPS = 200_000  # every loop is bounded in count as well as in time
FETCHES = 3_000
CSRS = 64  # distinct CSRs cycled through (signing does not care about repeats)


def rate(op: Callable[[], Any]) -> dict[str, float]:
    """Operations per second of a synchronous `op`, for SECONDS at most."""
    op()  # warm up
    done, start = 0, time.perf_counter()
    deadline = start + SECONDS
    while done < MAX_OPS and time.perf_counter() < deadline:
        op()
        done += 1
    elapsed = time.perf_counter() - start
    return {"ops": done, "seconds": elapsed, "per_second": done / elapsed}


async def async_rate(op: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    await op()
    done, start = 0, time.perf_counter()
    deadline = start + SECONDS
    while done < MAX_OPS and time.perf_counter() < deadline:
        await op()
        done += 1
    elapsed = time.perf_counter() - start
    return {"ops": done, "seconds": elapsed, "per_second": done / elapsed}


async def signing() -> dict[str, dict[str, float]]:
    cp = ControlPlane(MemoryStore())
    await cp.start()
    try:
        await cp.ca.set_config({"Config": {"CSRMaxPerSecond": 0}})  # measure signing, not the limiter
        spiffe = service_id(cp.ca.trust_domain, cp.datacenter, "web")
        csrs = [tx.make_leaf_csr(spiffe, tx.generate_private_key()) for _ in range(CSRS)]
        provider, ttl = cp.ca.snapshot().provider, cp.ca.snapshot().config.leaf_cert_ttl
        turn = iter(range(MAX_OPS * 4))

        def provider_sign() -> None:
            provider.sign_leaf(csrs[next(turn) % CSRS], expected=spiffe, ttl_seconds=ttl,
                               now=cp.ca.clock())

        async def server_sign() -> None:
            await cp.ca.sign(csrs[next(turn) % CSRS], "web")

        key = ec.generate_private_key(ec.SECP256R1())
        digest = os.urandom(32)
        return {
            "ecdsa_p256_sign": rate(lambda: key.sign(digest, ec.ECDSA(hashes.SHA256()))),
            "provider_sign_leaf": rate(provider_sign),
            "server_sign_path": await async_rate(server_sign),
        }
    finally:
        await cp.stop()


async def memory_fetch() -> dict[str, float]:
    """LeafCache.leaf() on a warm cache, per call in microseconds."""
    cp = ControlPlane(MemoryStore())
    await cp.start()
    cache = LeafCache(LocalLink(cp), datacenter=cp.datacenter)
    await cache.start()
    try:
        await cache.leaf("web")
        samples = []
        deadline = time.perf_counter() + SECONDS
        while len(samples) < FETCHES * 10 and time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            await cache.leaf("web")
            samples.append((time.perf_counter_ns() - start) / 1000)
        return summary(samples)
    finally:
        await cache.stop()
        await cp.stop()


def http_fetch() -> dict[str, float]:
    """GET /v1/agent/connect/ca/leaf/web on a real dev agent, per request in milliseconds."""
    agent = start_dev_agent(node="bench")
    try:
        with httpx.Client(base_url=agent.url, timeout=30) as api:
            api.get("/v1/agent/connect/ca/leaf/web").raise_for_status()  # first one signs
            samples = []
            deadline = time.perf_counter() + SECONDS * 2
            while len(samples) < FETCHES and time.perf_counter() < deadline:
                start = time.perf_counter()
                api.get("/v1/agent/connect/ca/leaf/web").raise_for_status()
                samples.append((time.perf_counter() - start) * 1000)
        return summary(samples)
    finally:
        agent.stop()


def main() -> None:
    signs = asyncio.run(signing())
    in_memory = asyncio.run(memory_fetch())
    over_http = http_fetch()
    ecdsa = signs["ecdsa_p256_sign"]["per_second"]
    print_table("Leaf signing, one core", ["operation", "per second", "vs raw ECDSA P-256"], [
        (name, row["per_second"], f"{row['per_second'] / ecdsa:.1%}") for name, row in signs.items()])
    print_table("Cached leaf fetch", ["path", "n", "p50", "p99", "unit"], [
        ("LeafCache.leaf() in memory", in_memory["n"], in_memory["p50"], in_memory["p99"], "µs"),
        ("GET /v1/agent/connect/ca/leaf/web", over_http["n"], over_http["p50"], over_http["p99"], "ms"),
    ])
    path = write_result("identity", {"signing": signs, "fetch_memory_us": in_memory, "fetch_http_ms": over_http})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
