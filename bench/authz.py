"""Micro-benchmark of `decide`, the per-connection authorization check.

`bench_decide(n_intentions=10000)` builds a snapshot with that many intentions (exact
pairs plus wildcards, and a few server policies) and times `decide` over a fixed mix
of callers: exact-intention hits, wildcard hits, default-policy fallthroughs,
authorization grants and refusals. The goal (tracker issue): median under 5 µs.

Timing is per batch of calls (one clock read per batch, not per call), so clock
overhead does not dominate a sub-microsecond operation; every loop is bounded by a
count and a wall-clock deadline. Run: `python bench/authz.py` (prints JSON).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

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


def _callers(width: int) -> list[tuple[Source, str, int]]:
    def me(name: str) -> SpiffeId:
        return SpiffeId(TRUST_DOMAIN, "default", "dc1", name)

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
    callers = _callers(width)
    work = [callers[i % len(callers)] for i in range(BATCH)]
    for source, dst, port in work:  # warm up, and check the snapshot answers at all
        decide(snapshot, source, dst, port)
    per_call: list[float] = []
    deadline = time.perf_counter() + MAX_SECONDS
    clock = time.perf_counter_ns
    while len(per_call) < MAX_BATCHES and time.perf_counter() < deadline:
        start = clock()
        for source, dst, port in work:
            decide(snapshot, source, dst, port)
        per_call.append((clock() - start) / BATCH)
    per_call.sort()
    median = statistics.median(per_call)
    return {
        "n_intentions": float(len(snapshot.intentions)),
        "batches": float(len(per_call)),
        "median_ns": round(median, 1),
        "p99_ns": round(per_call[min(len(per_call) - 1, int(len(per_call) * 0.99))], 1),
        "decisions_per_s": round(1e9 / median),
    }


if __name__ == "__main__":
    print(json.dumps(bench_decide(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000), indent=2))
