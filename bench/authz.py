"""Authorization benchmarks: the per-connection `decide`, and how fast a write reaches the agent.

1. `bench_decide(n_intentions=10000)` builds a snapshot with that many intentions (exact
   pairs plus wildcards, and a few server policies) and times `decide` over a fixed mix
   of callers: exact-intention hits, wildcard hits, default-policy fallthroughs,
   authorization grants and refusals. The goal (tracker issue): median under 5 µs.
2. `bench_agent_cache` does the same through a dev agent's cache (`agent.authz.decide`)
   after loading the intentions through the control plane, as a proxy in the agent would.
3. `bench_propagation` flips one intention between allow and deny ~50 times and times
   each write until the agent's decision changes: in a dev agent (the write is a control
   plane call in the same process), and with a `tether server` subprocess plus an agent
   in this process (the write is an HTTP PUT to the server; the agent learns it through
   its blocking watch over HTTP). The goal: p99 under 100 ms.

Timing of `decide` is per batch of calls (one clock read per batch, not per call), so
clock overhead does not dominate a sub-microsecond operation; every loop is bounded by a
count and a wall-clock deadline. Run: `python -m bench.authz` (or `make bench`): prints
tables and writes bench/results/authz-<date>.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tether.core.authz import PolicySnapshot, Source, build_snapshot, decide  # noqa: E402
from tether.core.intentions import Intention  # noqa: E402
from tether.core.policy import DefaultPolicy, ServerPolicy, make_authorization  # noqa: E402
from tether.core.spiffe import SpiffeId  # noqa: E402

TRUST_DOMAIN = "11111111-2222-3333-4444-555555555555.tether"
BATCH = 200  # calls per clock read
MAX_BATCHES = 2_000
MAX_SECONDS = 5.0


def build_bench_snapshot(n_intentions: int) -> PolicySnapshot:
    """A snapshot with `n_intentions` intentions over ~sqrt(n) services, wildcards included."""
    width = max(2, int(n_intentions**0.5) + 1)
    intentions = [Intention("*", f"svc{j}", "allow") for j in range(0, width, 2)]  # `*` -> dst
    intentions += [Intention(f"svc{i}", "*", "deny") for i in range(1, width, 7)]  # src -> `*`
    intentions.append(Intention("*", "*", "deny"))
    pairs = ((i, j) for i in range(width) for j in range(width) if i != j)
    for k, (i, j) in zip(range(max(0, n_intentions - len(intentions))), pairs):
        intentions.append(Intention(f"svc{i}", f"svc{j}", "deny" if k % 3 == 0 else "allow"))
    policies = [
        ServerPolicy("svc1", 5432, DefaultPolicy.DENY, (make_authorization("web", identities=["svc2", "svc3"]),)),
        ServerPolicy("svc2", None, DefaultPolicy.ALL_AUTHENTICATED),
        ServerPolicy("svc3", 80, DefaultPolicy.AUDIT),
    ]
    return build_snapshot(intentions, policies, "deny", "all-unauthenticated", TRUST_DOMAIN)


def _callers(width: int, trust_domain: str = TRUST_DOMAIN) -> list[tuple[Source, str, int]]:
    def me(name: str) -> SpiffeId:
        return SpiffeId(trust_domain, "default", "dc1", name)

    return [
        (Source(me("svc4"), "10.0.0.4"), "svc5", 8080),  # exact intention
        (Source(me("svc7"), "10.0.0.7"), "svc7", 8080),  # `*` -> dst
        (Source(me(f"svc{width + 5}"), "10.0.0.9"), "nosuch", 8080),  # `*` -> `*`
        (Source(me("svc2"), "10.0.0.2"), "svc1", 5432),  # authorization grant
        (Source(None, "192.0.2.1"), "svc2", 9000),  # refused by all-authenticated
        (Source(me("svc9"), "10.0.0.9"), "svc3", 80),  # audit mode
        (Source(None, "192.0.2.1"), "svc6", 80),  # unauthenticated, default intention
    ]


def bench_decide(n_intentions: int = 10_000) -> dict[str, float]:
    """Time `decide` on a snapshot of `n_intentions`; returns median/p99 ns and decisions/s."""
    snapshot = build_bench_snapshot(n_intentions)
    width = max(2, int(n_intentions**0.5) + 1)
    return _time_decisions(lambda s, d, p: decide(snapshot, s, d, p), _callers(width), len(snapshot.intentions))


def _time_decisions(run: Callable[[Source, str, int], Any], callers: list[tuple[Source, str, int]],
                    n_intentions: int) -> dict[str, float]:
    work = [callers[i % len(callers)] for i in range(BATCH)]
    for source, dst, port in work:  # warm up, and check the snapshot answers at all
        run(source, dst, port)
    per_call: list[float] = []
    deadline = time.perf_counter() + MAX_SECONDS
    clock = time.perf_counter_ns
    while len(per_call) < MAX_BATCHES and time.perf_counter() < deadline:
        start = clock()
        for source, dst, port in work:
            run(source, dst, port)
        per_call.append((clock() - start) / BATCH)
    per_call.sort()
    median = statistics.median(per_call)
    return {
        "n_intentions": float(n_intentions),
        "batches": float(len(per_call)),
        "median_ns": round(median, 1),
        "p99_ns": round(per_call[min(len(per_call) - 1, int(len(per_call) * 0.99))], 1),
        "decisions_per_s": round(1e9 / median),
    }


# --- through the agent: its cache, and propagation of a write -----------------------------------

FLIPS = int(os.environ.get("BENCH_AUTHZ_FLIPS", "50"))
#: Intentions in the store while flipping one (the agent re-reads the whole state per change).
BACKGROUND = int(os.environ.get("BENCH_AUTHZ_BACKGROUND", "1000"))
FLIP_TIMEOUT = 5.0  # seconds one flip may take before the run is declared broken


def _intention_documents(n_intentions: int) -> list[dict[str, Any]]:
    """The bench snapshot's intentions as ServiceIntentions documents (what `policy apply` takes)."""
    by_dst: dict[str, list[dict[str, str]]] = {}
    for i in build_bench_snapshot(n_intentions).intentions:
        by_dst.setdefault(i.destination_name, []).append({"name": i.source_name, "action": i.action})
    return [{"apiVersion": "tether.dev/v1", "kind": "ServiceIntentions", "spec": {"destination": d, "sources": s}}
            for d, s in by_dst.items()]


async def _until_synced(agent: Any, index: int) -> None:
    deadline = time.perf_counter() + 60
    while agent.authz.index < index:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the agent's cache never reached index {index}")
        await asyncio.sleep(0.01)


async def _flips(write: Callable[[str], Awaitable[Any]], allowed: Callable[[], bool]) -> list[float]:
    """Milliseconds from the start of each write until `allowed()` reflects it."""
    out = []
    for k in range(FLIPS):
        action = "deny" if allowed() else "allow"
        start = time.perf_counter()
        await write(action)
        while allowed() != (action == "allow"):
            if time.perf_counter() - start > FLIP_TIMEOUT:
                raise RuntimeError(f"flip {k} to {action} not visible after {FLIP_TIMEOUT}s")
            await asyncio.sleep(0.0002)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _runtime(**options: Any) -> Any:
    from tether import daemon

    return daemon.open_runtime(daemon.Options(http_port=0, managed_proxies=False, **options))


async def bench_agent(n_intentions: int = 10_000, background: int = BACKGROUND) -> dict[str, Any]:
    """Decisions through a dev agent's cache with `n_intentions`, then propagation with `background`."""
    from tether.core.policy_yaml import parse_policy_objects

    async with _runtime(role="dev", node="bench") as app:
        agent, cp = app.state.agent, app.state.control_plane
        await _until_synced(agent, await cp.intentions.apply(parse_policy_objects(_intention_documents(n_intentions))))
        width = max(2, int(n_intentions**0.5) + 1)
        cached = _time_decisions(agent.authz.decide, _callers(width, agent.authz.trust_domain),
                                 len(agent.authz.snapshot.intentions))
    async with _runtime(role="dev", node="bench") as app:
        agent, cp = app.state.agent, app.state.control_plane
        await _until_synced(agent, await cp.intentions.apply(parse_policy_objects(_intention_documents(background))))
        web = Source(SpiffeId(agent.authz.trust_domain, "default", "dc1", "web"))
        dev = await _flips(lambda a: cp.intentions.upsert_exact("web", "db", {"Action": a}),
                           lambda: agent.authz.decide(web, "db", 5432).allowed)
    return {"cache": cached, "dev_ms": dev}


async def bench_pair(server_addr: str, background: int = BACKGROUND) -> list[float]:
    """Propagation with a `tether server` subprocess and an agent in this process."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{server_addr}", timeout=30) as api:
        r = await api.put("/v1/tether/policy", content=json.dumps(_intention_documents(background)).encode())
        r.raise_for_status()
        async with _runtime(role="agent", server_addr=server_addr, node="bench") as app:
            agent = app.state.agent
            await _until_synced(agent, r.json()["Index"])
            web = Source(SpiffeId(agent.authz.trust_domain, "default", "dc1", "web"))

            async def write(action: str) -> None:
                (await api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"},
                               json={"Action": action})).raise_for_status()

            return await _flips(write, lambda: agent.authz.decide(web, "db", 5432).allowed)


def main() -> dict[str, Any]:
    from bench.common import print_table, summary, write_result
    from tether.testing.agent import start_tether

    core = bench_decide(10_000)
    agent = asyncio.run(bench_agent(10_000))
    with tempfile.TemporaryDirectory() as tmp:
        server = start_tether("server", "-data-dir", str(Path(tmp) / "server"))
        try:
            pair = asyncio.run(bench_pair(server.addr))
        finally:
            server.stop()
    print_table("Authorization: decide() with 10,000 intentions (goal: median under 5 µs)",
                ["path", "intentions", "decisions/s", "median ns", "p99 ns"],
                [(name, int(r["n_intentions"]), r["decisions_per_s"], r["median_ns"], r["p99_ns"])
                 for name, r in (("snapshot (core)", core), ("agent.authz.decide", agent["cache"]))])
    prop = {"dev agent": summary(agent["dev_ms"]), "server + agent (HTTP)": summary(pair)}
    print_table(f"Authorization: write on the server -> agent decision changed, {FLIPS} flips, "
                f"{BACKGROUND} other intentions (goal: p99 under 100 ms)",
                ["setup", "flips", "p50 ms", "p99 ms", "max ms"],
                [(name, r["n"], r["p50"], r["p99"], r["max"]) for name, r in prop.items()])
    results = {"decide": core, "agent_cache": agent["cache"], "propagation_ms": prop,
               "flips": FLIPS, "background_intentions": BACKGROUND}
    print(f"\nwritten to {write_result('authz', results)}")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1:  # `python -m bench.authz N`: only the core micro-benchmark, as JSON
        print(json.dumps(bench_decide(int(sys.argv[1])), indent=2))
    else:
        main()
