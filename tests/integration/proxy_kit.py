"""Helpers for the proxy integration tests: echo apps, a dev agent with managed sidecars,
registrations, and waiting on the sidecars' READY lines, health and access logs.

Everything runs on loopback. Ports: apps bind port 0; the agent chooses each sidecar's
public port (and holds it); an upstream's LocalBindPort, which must be named up front, is a
port the test holds (`Mesh.port()`, tether.testing.ports). Nothing sleeps for readiness:
every wait polls a condition with a deadline. A sidecar is healthy as soon as it listens
(it passes its own listener check), so no test shortens a check interval.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from tether.testing.agent import RunningAgent, start_dev_agent
from tether.testing.ports import HeldPort

#: How long any wait in these tests may take before it fails.
DEADLINE = 30.0
_READY = re.compile(r"READY (.*)")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = DEADLINE, every: float = 0.05) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, httpx.HTTPError, ValueError, KeyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class EchoServer:
    """A threaded TCP echo app on 127.0.0.1:0. With `greeting`, every connection first
    receives `greeting + b"\\n"` (tells load-balanced instances apart)."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.greeting:
                    conn.sendall(self.greeting + b"\n")
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def roundtrip(port: int, payload: bytes = b"ping", *, greeting: bool = False, timeout: float = 5.0) -> bytes:
    """Connect to 127.0.0.1:port, send `payload`, return what came back (greeting line + echo)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        want = len(payload)
        buf = b""
        while True:
            if greeting and b"\n" in buf and len(buf.split(b"\n", 1)[1]) >= want:
                return buf
            if not greeting and len(buf) >= want:
                return buf
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""  # a proxy that refuses a connection may reset it
            if not chunk:
                return buf
            buf += chunk


def open_stream(port: int, timeout: float = 5.0) -> socket.socket:
    """A connection through a proxy that has proven it works (one echo round trip)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"hi")
    got = b""
    while len(got) < 2:
        chunk = s.recv(64)
        if not chunk:
            raise OSError("closed before the first echo")
        got += chunk
    return s


def still_open(s: socket.socket, payload: bytes = b"again") -> bool:
    """True when an echo round trip still works on `s`; False when the proxy closed it."""
    try:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(64)
            if not chunk:
                return False
            got += chunk
        return got == payload
    except OSError:
        return False


@dataclass
class Mesh:
    """A `tether agent -dev` with managed sidecars, and an HTTP client for it."""

    agent: RunningAgent
    api: httpx.Client
    apps: list[EchoServer] = field(default_factory=list)
    held: list[HeldPort] = field(default_factory=list)

    @classmethod
    def start(cls, **kwargs: Any) -> "Mesh":
        agent = start_dev_agent(managed_proxies=True, **kwargs)
        return cls(agent, httpx.Client(base_url=agent.url, timeout=30))

    def close(self) -> None:
        self.agent.stop()  # the agent stops its sidecars (SIGTERM, they drain and exit)
        for app in self.apps:
            app.close()
        for port in self.held:
            port.close()
        # Belt and braces: a sidecar that outlived its agent (started in its own session)
        # would keep running; end the ones this test started, by PID.
        pids = {int(m.group(1)) for line in self.agent.log for m in [re.search(r"READY .* pid=(\d+)", line)] if m}
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGTERM)
        wait_for("the sidecars to exit", lambda: not any(process_alive(p) for p in pids), timeout=15)

    def app(self, greeting: bytes = b"") -> EchoServer:
        server = EchoServer(greeting)
        self.apps.append(server)
        return server

    def port(self) -> int:
        """A port held for this mesh's lifetime, for a listener a sidecar must open there."""
        held = HeldPort()
        self.held.append(held)
        return held.port

    def register(self, name: str, port: int, *, id: str = "", upstreams: list[dict] | None = None,
                 config: dict | None = None, meta: dict[str, str] | None = None, namespace: str = "") -> int:
        """Register `name` (in `namespace`, else `default`) with a sidecar on a port the agent
        chooses; returns that port."""
        proxy: dict[str, Any] = {"upstreams": upstreams or []}
        if config:
            proxy["config"] = config
        body: dict[str, Any] = {"name": name, "port": port, "connect": {"sidecar_service": {"proxy": proxy}}}
        if meta:
            body["meta"] = meta
        if namespace:
            body["namespace"] = namespace
        if id:
            body["id"] = id
        self.api.put("/v1/agent/service/register", json=body).raise_for_status()
        return self.api.get(f"/v1/agent/service/{id or name}-sidecar-proxy").json()["Port"]

    def healthy(self, name: str, count: int = 1, namespace: str = "default") -> list:
        return wait_for(f"{count} passing connect instance(s) of {name}", lambda: (
            lambda e: e if len(e) >= count else None)(
                self.api.get(f"/v1/health/connect/{name}", params={"passing": "1", "ns": namespace}).json()))

    def flowing(self, port: int) -> None:
        """Wait until an echo round trip through upstream `port` works (the sidecar's pool has
        caught up with the catalog: health can pass before the proxy's watch fires)."""
        wait_for(f"traffic through 127.0.0.1:{port}", lambda: roundtrip(port, b"ok") == b"ok")

    def intention(self, source: str, destination: str, action: str) -> None:
        self.api.put("/v1/connect/intentions/exact", params={"source": source, "destination": destination},
                     json={"Action": action}).raise_for_status()

    def default_intention(self, action: str) -> None:
        self.api.put("/v1/tether/mesh", json={"defaultIntention": action}).raise_for_status()

    def ready(self, service: str, after: int = 0) -> dict[str, str]:
        """The fields of the newest READY line of `service`'s proxy (after log line `after`)."""
        def find() -> dict[str, str] | None:
            for line in reversed(self.agent.log[after:]):
                m = _READY.search(line)
                if m:
                    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
                    if fields.get("service") == service:
                        return fields
            return None
        return wait_for(f"READY line of {service}'s proxy", find)

    def access_logs(self, **match: Any) -> list[dict]:
        """Access-log records (JSON lines in the agent's output) with every given field equal."""
        out = []
        for line in list(self.agent.log):
            if line.startswith('{"start_time"'):
                try:
                    rec = json.loads(line)
                except ValueError:  # several sidecars share the agent's stderr: a line may be torn
                    continue
                if all(rec.get(k) == v for k, v in match.items()):
                    out.append(rec)
        return out

    def wait_log(self, what: str, **match: Any) -> dict:
        return wait_for(what, lambda: (self.access_logs(**match) or [None])[-1])


def metrics(admin: str) -> str:
    return httpx.get(f"http://{admin}/metrics", timeout=5).text


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text; 0.0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def start_proxy(*args: str, addr: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict[str, str], list[str]]:
    """`tether connect proxy ARGS` as a person runs it; returns (process, READY fields, log lines)."""
    cmd = [sys.executable, "-m", "tether.cli.main", "connect", "proxy", *args, "-http-addr", addr]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    ready: dict[str, str] = {}
    got = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = _READY.search(line)
            if m and not got.is_set():
                ready.update(kv.split("=", 1) for kv in m.group(1).split())
                got.set()
        got.set()

    threading.Thread(target=pump, daemon=True).start()
    if not got.wait(DEADLINE) or not ready:
        proc.kill()
        raise AssertionError(f"tether connect proxy {' '.join(args)} did not get ready:\n{''.join(lines)}")
    return proc, ready, lines


def stop_proxy(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def start_agent_on(port: int, data_dir: str, node: str = "node1") -> RunningAgent:
    """A dev agent on a port the test holds, with a data dir, so a test can stop and restart
    it in place (the proxies keep its address). Managed proxies off: the test runs them by hand."""
    cmd = [sys.executable, "-m", "tether.cli.main", "agent", "-dev", "-node", node, "-no-managed-proxies",
           "-data-dir", data_dir, "-http-port", str(port), "-dns-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TETHER_LOG_LEVEL": "WARNING"})
    lines: list[str] = []
    up = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "HTTP API: http://" in line:
                up.set()
        up.set()

    threading.Thread(target=pump, daemon=True).start()
    if not up.wait(DEADLINE) or proc.poll() is not None:
        proc.kill()
        raise AssertionError(f"agent on port {port} did not start:\n{''.join(lines)}")
    return RunningAgent(f"http://127.0.0.1:{port}", proc, lines)


class Traffic:
    """A thread opening a new connection to 127.0.0.1:port every EVERY s (an echo round
    trip) and echoing on the `held` ones every tenth time; every failure is kept with its
    time. Bounded in count (MAX) and in time (`seconds`)."""

    EVERY = 0.05
    MAX = 4000

    def __init__(self, port: int, held: list, seconds: float) -> None:
        self.port, self.held, self.seconds = port, held, seconds
        self.ok = 0
        self.failures: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        n = 0
        while not self._stop.is_set() and n < self.MAX and time.monotonic() < deadline:
            n += 1
            try:
                got = roundtrip(self.port, b"ping %d" % n)
            except OSError as e:
                got = e
            if got == b"ping %d" % n:
                self.ok += 1
            else:
                self.failures.append((time.monotonic(), got))
            if n % 10 == 0:
                for i, s in enumerate(self.held):
                    if not still_open(s, b"held %d" % i):
                        self.failures.append((time.monotonic(), f"held connection {i} was closed"))
            self._stop.wait(self.EVERY)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
