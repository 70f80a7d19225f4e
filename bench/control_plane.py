"""Control-plane benchmark: catalog registration rate and blocking-query wake-up latency.

Runs a real `tether agent -dev` (memory store, then SQLite with synchronous=FULL) as a
subprocess on loopback and drives it over HTTP, as applications would.

    python -m bench.control_plane        (BENCH_REGISTRATIONS=2000 BENCH_WATCHERS=1000 BENCH_ROUNDS=5)
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import RawHttp, print_table, summary, write_result
from tether.testing.agent import start_dev_agent

REGISTRATIONS = int(os.environ.get("BENCH_REGISTRATIONS", "2000"))
WATCHERS = int(os.environ.get("BENCH_WATCHERS", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CONCURRENCY = 16
TIME_CAP = 60.0  # seconds per phase: every loop here is bounded in count and in time


async def register_rate(url: str) -> dict[str, float]:
    """Registrations/s through /v1/agent/service/register, CONCURRENCY connections in flight."""
    queue = iter(range(REGISTRATIONS))
    done = 0
    deadline = time.monotonic() + TIME_CAP

    async def worker() -> None:
        nonlocal done
        conn = await RawHttp.open(url)
        try:
            for i in queue:
                if time.monotonic() > deadline:
                    return
                body = json.dumps({"Name": f"svc{i % 50}", "ID": f"svc-{i}", "Port": 1000 + i % 50000}).encode()
                status, text = await conn.request("PUT", "/v1/agent/service/register", body)
                if status != 200:
                    raise RuntimeError(f"registration failed: {status} {text[:200]!r}")
                done += 1
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
    elapsed = time.monotonic() - started
    return {"registrations": done, "seconds": elapsed, "per_second": done / elapsed}


async def wake_latency(url: str) -> dict[str, float]:
    """WATCHERS blocking reads on one service; one registration; time until each returns.

    The watchers are bare HTTP/1.1 requests on their own sockets (not an HTTP client
    library), so what is measured is the server's wake-up, not the client's overhead.
    """
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as api:
        for round_no in range(ROUNDS):
            index = (await api.get("/v1/health/service/watched")).headers["X-Consul-Index"]
            request = (f"GET /v1/health/service/watched?index={index}&wait=30s HTTP/1.1\r\n"
                       f"Host: {host}\r\nConnection: close\r\n\r\n").encode()
            conns = [await asyncio.open_connection(host, int(port)) for _ in range(WATCHERS)]
            for _, writer in conns:
                writer.write(request)
            await asyncio.gather(*(w.drain() for _, w in conns))
            await _until_parked(api, index)
            changed = time.monotonic()
            await api.put("/v1/agent/service/register", json={"Name": "watched", "ID": f"w{round_no}", "Port": 1})

            async def first_byte(reader: asyncio.StreamReader) -> float:
                await reader.read(1)
                return time.monotonic()

            returned = await asyncio.wait_for(asyncio.gather(*(first_byte(r) for r, _ in conns)), TIME_CAP)
            latencies += [(t - changed) * 1000 for t in returned]
            for _, writer in conns:
                writer.close()
    return summary(latencies)


async def _until_parked(api: httpx.AsyncClient, index: str) -> None:
    """Wait until the requests have reached the server: a short blocking probe of our own
    returning on timeout (not on a change) shows the server is past the backlog."""
    deadline = time.monotonic() + TIME_CAP
    while time.monotonic() < deadline:
        started = time.monotonic()
        await api.get("/v1/health/service/watched", params={"index": index, "wait": "100ms"})
        if time.monotonic() - started < 0.5:  # served promptly: the backlog is drained
            return


def main() -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data_dir in (("memory", None), ("sqlite", Path(tmp) / "data")):
            agent = start_dev_agent(data_dir=data_dir)
            try:
                results[name] = {"register": asyncio.run(register_rate(agent.url)),
                                 "wake_ms": asyncio.run(wake_latency(agent.url))}
            finally:
                agent.stop()
    print_table(
        f"Control plane: registrations ({CONCURRENCY} in flight) and wake-up of {WATCHERS} blocked watchers",
        ["store", "registrations/s", "wake p50 ms", "wake p99 ms", "wake max ms"],
        [(name, r["register"]["per_second"], r["wake_ms"]["p50"], r["wake_ms"]["p99"], r["wake_ms"]["max"])
         for name, r in results.items()],
    )
    path = write_result("control-plane", {"registrations": REGISTRATIONS, "watchers": WATCHERS,
                                          "rounds": ROUNDS, "results": results})
    print(f"\nwritten to {path}")
    return results


if __name__ == "__main__":
    main()
