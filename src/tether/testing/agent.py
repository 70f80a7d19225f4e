"""Start a real `tether agent -dev` (or server/agent) as a subprocess for tests.

The process binds port 0 and prints its URL in the banner; we read it from there, so
tests never guess ports and never sleep to wait for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

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


def start_tether(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0,
                 prefix: tuple[str, ...] = ()) -> RunningAgent:
    """Run `tether ARGS -http-port 0` (unless ARGS name a port: a restart in place) and return
    once its API is listening. `prefix` runs it through a wrapper (e.g. setpriv, as another user)."""
    dns = ["-dns-port", "0"] if args and args[0] == "agent" and "-dns-port" not in args else []
    http = [] if "-http-port" in args else ["-http-port", "0"]
    cmd = [*prefix, sys.executable, "-m", "tether.cli.main", *args, *http, *dns]
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


def write_acl_config(directory: Path, management: str, **acl: Any) -> Path:
    """An `acl.json` turning ACLs on with `management` as the initial management token (plus
    any other `acl` keys), 0600 as a file holding a token must be."""
    path = directory / "acl.json"
    path.write_text(json.dumps({"acl": {"enabled": True, "tokens": {"initial_management": management}, **acl}}))
    path.chmod(0o600)
    return path


def start_acl_dev_agent(directory: Path, management: str, **acl: Any) -> RunningAgent:
    """A dev agent with ACLs on (write_acl_config's file in `directory`), node n1, no sidecars."""
    conf = write_acl_config(directory, management, **acl)
    return start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-config-file", str(conf))


def start_dev_agent(data_dir: Path | None = None, node: str = "node1", *, managed_proxies: bool = False) -> RunningAgent:
    """A dev agent; sidecars are not started unless asked (most tests exercise the control plane)."""
    args = ["agent", "-dev", "-node", node] + ([] if managed_proxies else ["-no-managed-proxies"])
    if data_dir is not None:
        args += ["-data-dir", str(data_dir)]
    return start_tether(*args)


@dataclass
class InProcess:
    """A Tether role served in this event loop: its URL, and its parts for tests to look at."""

    url: str
    app: Any

    @property
    def store(self) -> Any:
        return self.app.state.control_plane.store

    @property
    def agent(self) -> Any:
        return self.app.state.agent


@contextlib.asynccontextmanager
async def open_in_process(role: str = "dev", **options: object) -> AsyncIterator[InProcess]:
    """Run a Tether role inside the current event loop on 127.0.0.1:0."""
    from tether import daemon

    options.setdefault("managed_proxies", False)
    options.setdefault("dns_port", -1)
    opts = daemon.Options(role=role, http_port=0, **options)  # type: ignore[arg-type]
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    apps: list[Any] = []
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.serve(opts, lambda url, dns: ready.set_result(url), stop=stop,
                                            on_app=apps.append))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        await task  # startup failed: raise its error
    try:
        yield InProcess(ready.result(), apps[0])
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def serve_in_process(role: str = "dev", **options: object) -> AsyncIterator[str]:
    """Run a Tether role inside the current event loop on 127.0.0.1:0; yield its URL."""
    async with open_in_process(role, **options) as node:
        yield node.url


class ThreadedNode:
    """`open_in_process` on an event loop of its own in a thread, for a synchronous client
    (py-consul) whose test also looks inside: `call(fn)` runs fn on that loop."""

    def __init__(self, role: str = "dev", **options: object) -> None:
        self.role, self.options = role, options
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.node: InProcess | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with open_in_process(self.role, **self.options) as node:
                self.node = node
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # startup failed: __enter__ raises it
            self._error = exc
            self._ready.set()

    @property
    def url(self) -> str:
        assert self.node is not None
        return self.node.url

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def wait_parked(self, count: Callable[[InProcess], int], timeout: float = 10.0) -> None:
        """Wait until `count(node)` is above 0 (see `until_parked`)."""
        deadline = time.monotonic() + timeout
        while not self.call(lambda: count(self.node)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no blocking query parked within {timeout:g}s")
            time.sleep(0.005)

    def __enter__(self) -> "ThreadedNode":
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.loop.close()


async def until_parked(count: Callable[[], int], *, more_than: int = 0, timeout: float = 10.0) -> None:
    """Wait until `count()` (a store's `parked(prefix)`, an agent's `parked`) exceeds
    `more_than`: the blocking query under test is waiting, so a write now must wake it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while count() <= more_than:
        if loop.time() > deadline:
            raise AssertionError(f"no blocking query parked within {timeout:g}s (count {count()})")
        await asyncio.sleep(0.005)


def run_cli(*args: str, addr: str | None = None, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `tether ARGS` as a user would (a new process), against the agent at `addr`."""
    env = {**os.environ, **({"TETHER_HTTP_ADDR": addr} if addr else {})}
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=timeout)
