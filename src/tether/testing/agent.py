"""Start a real `tether agent -dev` (or server/agent) as a subprocess for tests.

The process binds port 0 and prints its URL in the banner; we read it from there, so
tests never guess ports and never sleep to wait for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

_URL = re.compile(r"HTTP API: (http://\S+)")


@dataclass
class RunningAgent:
    url: str
    proc: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the process and wait; the default outlasts a graceful stop (its sidecars get
        up to 10 s to drain, agent/supervisor.py STOP_GRACE) before SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_tether(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> RunningAgent:
    """Run `tether ARGS -http-port 0` (unless ARGS name a port: a restart in place) and return
    once its API is listening."""
    dns = ["-dns-port", "0"] if args and args[0] == "agent" and "-dns-port" not in args else []
    http = [] if "-http-port" in args else ["-http-port", "0"]
    cmd = [sys.executable, "-m", "tether.cli.main", *args, *http, *dns]
    full_env = {**os.environ, "TETHER_LOG_LEVEL": "WARNING", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:  # keep draining output so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = _URL.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"tether {' '.join(args)} did not start within {timeout}s:\n{''.join(lines)}")
    if not found:
        raise RuntimeError(f"tether {' '.join(args)} exited with {proc.wait()}:\n{''.join(lines)}")
    return RunningAgent(found[0], proc, lines)


def start_dev_agent(data_dir: Path | None = None, node: str = "node1", *, managed_proxies: bool = False) -> RunningAgent:
    """A dev agent; sidecars are not started unless asked (most tests exercise the control plane)."""
    args = ["agent", "-dev", "-node", node] + ([] if managed_proxies else ["-no-managed-proxies"])
    if data_dir is not None:
        args += ["-data-dir", str(data_dir)]
    return start_tether(*args)


@contextlib.asynccontextmanager
async def serve_in_process(role: str = "dev", **options: object) -> AsyncIterator[str]:
    """Run a Tether role inside the current event loop on 127.0.0.1:0; yield its URL."""
    from tether import daemon

    options.setdefault("managed_proxies", False)
    options.setdefault("dns_port", -1)
    opts = daemon.Options(role=role, http_port=0, **options)  # type: ignore[arg-type]
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.serve(opts, lambda url, dns: ready.set_result(url), stop=stop))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        await task  # startup failed: raise its error
    try:
        yield ready.result()
    finally:
        stop.set()
        await task


def run_cli(*args: str, addr: str | None = None, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `tether ARGS` as a user would (a new process), against the agent at `addr`."""
    env = {**os.environ, **({"TETHER_HTTP_ADDR": addr} if addr else {})}
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=timeout)
