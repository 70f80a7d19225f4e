"""ACL benchmark: what a cached token resolution costs per request, beside a catalog read.

Two measurements, side by side in one run:

  1. In process: `ACLService.authorizer(secret)` for a token already resolved (the cache
     hit every request after the first takes) and one `allowed()` decision, against the
     catalog read itself (`Catalog.instances`), in microseconds.
  2. Over HTTP: GET /v1/catalog/service/web on a dev agent with ACLs off, and on one with
     ACLs on and a service-identity token, CONCURRENCY connections in flight. Both agents
     run at once and are measured in alternating rounds; the ratio is the median of the
     per-round ratios, so slow drifts in background load cancel out.

    python -m bench.acl          (BENCH_ACL_REQUESTS=5000)
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
from tether.testing.agent import start_tether

REQUESTS = int(os.environ.get("BENCH_ACL_REQUESTS", "3000"))
ROUNDS = int(os.environ.get("BENCH_ACL_ROUNDS", "5"))
CONCURRENCY = 8
TIME_CAP = 60.0  # seconds per phase: every loop is bounded in count and in time
MANAGEMENT = "11111111-2222-3333-4444-555555555555"


async def in_process() -> dict[str, float]:
    from tether.control.server import ControlPlane, ServerConfig
    from tether.core.acl import READ
    from tether.core.agent_config import AclConfig
    from tether.store.cached import MemoryStore

    cp = ControlPlane(MemoryStore(), ServerConfig(acl=AclConfig(enabled=True, default_policy="deny",
                                                                initial_management=MANAGEMENT)))
    await cp.start()
    try:
        await cp.catalog.register({"Node": "n1", "Address": "127.0.0.1"},
                                  [{"ID": f"web-{i}", "Service": "web", "Tags": [], "Port": 8000 + i, "Address": "",
                                    "Meta": {}, "Kind": "", "Node": "n1"} for i in range(3)])
        token = await cp.acl.create_token({"ServiceIdentities": [{"ServiceName": "web"}]})
        secret = token["SecretID"]
        cp.acl.authorizer(secret)  # warm the cache, as the first request does
        n = 100_000

        def timed(fn) -> float:
            started = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - started) / n * 1e6

        authz = cp.acl.authorizer(secret)
        return {"resolve_cached_us": timed(lambda: cp.acl.authorizer(secret)),
                "decide_us": timed(lambda: authz.allowed("service", "web", READ)),
                "catalog_read_us": timed(lambda: cp.catalog.instances("web"))}
    finally:
        await cp.stop()


async def http_rate(url: str, token: str) -> dict[str, float]:
    queue = iter(range(REQUESTS))
    done = 0
    latencies: list[float] = []
    deadline = time.monotonic() + TIME_CAP

    async def worker() -> None:
        nonlocal done
        conn = await RawHttp.open(url)
        try:
            for _ in queue:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                status, text = await conn.request("GET", "/v1/catalog/service/web", token=token)
                latencies.append((time.perf_counter() - started) * 1e6)
                if status != 200:
                    raise RuntimeError(f"catalog read failed: {status} {text[:200]!r}")
                done += 1
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])
    elapsed = time.monotonic() - started
    return {"requests": done, "per_second": done / elapsed, **{f"latency_{k}_us": v
                                                                  for k, v in summary(latencies).items()}}


def agent_with(acl: bool, tmp: Path) -> tuple[object, str]:
    args = ["agent", "-dev", "-node", "n1", "-no-managed-proxies"]
    if acl:
        conf = tmp / "acl.json"
        conf.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                            "tokens": {"initial_management": MANAGEMENT}}}))
        conf.chmod(0o600)
        args += ["-config-file", str(conf)]
    agent = start_tether(*args)
    headers = {"X-Consul-Token": MANAGEMENT} if acl else {}
    api = httpx.Client(base_url=agent.url, timeout=30, headers=headers)
    api.put("/v1/agent/service/register", json={"Name": "web", "Port": 8080}).raise_for_status()
    token = api.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "web"}]}).json()["SecretID"] \
        if acl else ""
    return agent, token


def main() -> dict:
    import statistics

    micro = asyncio.run(in_process())
    rounds: dict[str, list[dict[str, float]]] = {"ACLs off": [], "ACLs on, token": []}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        agents = {"ACLs off": agent_with(False, Path(tmp)), "ACLs on, token": agent_with(True, Path(tmp))}
        try:
            for agent, token in agents.values():
                asyncio.run(http_rate(agent.url, token))  # warm up (the first request resolves the token)
            for _ in range(ROUNDS):
                for name, (agent, token) in agents.items():
                    rounds[name].append(asyncio.run(http_rate(agent.url, token)))
        finally:
            for agent, _ in agents.values():
                agent.stop()
    print_table("ACL cost in process (µs per call)", ["cached token resolution", "one decision", "catalog read"],
                [(micro["resolve_cached_us"], micro["decide_us"], micro["catalog_read_us"])])
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rounds.items()}
    ratio = statistics.median(on["per_second"] / off["per_second"]
                              for off, on in zip(rounds["ACLs off"], rounds["ACLs on, token"]))
    print_table(f"GET /v1/catalog/service/web over HTTP ({CONCURRENCY} in flight, median of {ROUNDS} "
                f"alternating rounds, load {load:.2f} at start)", ["", "requests/s", "p50 µs", "p99 µs"],
                [(name, r["per_second"], r["latency_p50_us"], r["latency_p99_us"]) for name, r in med.items()]
                + [("ACLs on / off (median of paired ratios)", ratio, "", "")])
    path = write_result("acl", {"in_process": micro, "http_rounds": rounds, "ratio": ratio, "load": load,
                                "requests": REQUESTS})
    print(f"\nwritten to {path}")
    return {"in_process": micro, "http": med, "ratio": ratio}


if __name__ == "__main__":
    main()
