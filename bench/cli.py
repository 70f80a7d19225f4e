"""CLI start-up: wall time of `tether kv get`, `tether intention check` and `tether catalog
services` against a running dev agent, beside `curl` doing the same HTTP call.

Each command runs RUNS times in turn (interleaved, so background load hits all alike);
the table gives the median and the fastest run. A CLI command is a new process, so this is
mostly interpreter start-up and imports (docs/performance.md, "CLI start-up").

    python -m bench.cli          (BENCH_CLI_RUNS=15; TETHER=path/to/tether to time another build)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

import httpx

from bench.common import print_table, write_result
from tether.testing.agent import start_dev_agent

RUNS = int(os.environ.get("BENCH_CLI_RUNS", "15"))


def main() -> dict:
    tether = os.environ.get("TETHER") or shutil.which("tether", path=os.path.dirname(sys.executable)) or "tether"
    agent = start_dev_agent()
    try:
        api = httpx.Client(base_url=agent.url)
        api.put("/v1/kv/greeting", content=b"hello").raise_for_status()
        api.put("/v1/agent/service/register", json={"Name": "web", "Port": 80}).raise_for_status()
        env = {**os.environ, "TETHER_HTTP_ADDR": agent.addr}
        commands = {
            "tether kv get greeting": [tether, "kv", "get", "greeting"],
            "tether intention check web db": [tether, "intention", "check", "web", "db"],
            "tether catalog services": [tether, "catalog", "services"],
            "curl /v1/kv/greeting?raw": ["curl", "-sf", f"{agent.url}/v1/kv/greeting?raw"],
            "curl /v1/catalog/services": ["curl", "-sf", f"{agent.url}/v1/catalog/services"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        load = os.getloadavg()[0]
        for _ in range(RUNS):
            for name, cmd in commands.items():
                started = time.perf_counter()
                done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
                times[name].append((time.perf_counter() - started) * 1000)
                if done.returncode not in (0, 1):  # intention check exits 1 for "denied"
                    raise RuntimeError(f"{name} failed: {done.stderr.decode()[:200]}")
    finally:
        agent.stop()
    rows = [(name, statistics.median(t), min(t)) for name, t in times.items()]
    print_table(f"CLI start-up, wall ms ({RUNS} interleaved runs, load {load:.2f} at start; {tether})",
                ["command", "median ms", "fastest ms"], rows)
    path = write_result("cli", {"tether": tether, "runs": RUNS, "load": load, "ms": times})
    print(f"\nwritten to {path}")
    return {name: statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    main()
