"""`tether proxy -gateway egress` as a process: registered with a dev agent, fed by it, live updates.

A test-side client plays a sidecar (mesh leaf from the same agent, the TETHER-EGRESS
preamble, the application's TLS inside), so these run on loopback without iptables.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tether.proxy.egress.preamble import format_preamble
from tether.proxy.tls import load_chain_in_memory
from tether.testing.agent import run_cli, start_dev_agent
from tether.testing.ports import held_port

from egress_kit import external_server_context

LO = "127.0.0.1"


class Proc:
    """A subprocess whose stderr is pumped for READY/RELOADED lines and whose stdout is the access log."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.err: list[str] = []
        self.out: list[str] = []
        self.cond = threading.Condition()
        for stream, sink in ((self.proc.stderr, self.err), (self.proc.stdout, self.out)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    def _pump(self, stream, sink) -> None:
        for line in stream:
            with self.cond:
                sink.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, sink: list[str], pred, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = next((line for line in sink if pred(line)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.cond.wait(0.2):
                    raise AssertionError("line not seen:\n" + "\n".join(self.err[-20:] + self.out[-20:]))
                self.cond.wait(left)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def mesh_client(agent_url: str, service: str) -> ssl.SSLContext:
    leaf = httpx.get(f"{agent_url}/v1/agent/connect/ca/leaf/{service}").json()
    roots = httpx.get(f"{agent_url}/v1/agent/connect/ca/roots").json()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata="\n".join(r["RootCert"] for r in roots["Roots"]))
    load_chain_in_memory(ctx, leaf["CertPEM"] + leaf["PrivateKeyPEM"])
    return ctx


def through_gateway(gw_port: int, mesh_ctx, app_ctx, host: str, port: int, payload: bytes) -> bytes:
    """Play a sidecar: mesh TLS (SNI = host), preamble, then the application's own TLS inside."""
    raw = socket.create_connection((LO, gw_port), timeout=10)
    outer = mesh_ctx.wrap_socket(raw, server_hostname=host)
    outer.sendall(format_preamble("198.51.100.7", port))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    inner = app_ctx.wrap_bio(inc, out, server_hostname=host)

    def pump() -> bool:
        if data := out.read():
            outer.sendall(data)
        chunk = outer.recv(65536)
        inc.write(chunk)
        return bool(chunk)

    try:
        while True:
            try:
                inner.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not pump():
                    return b""
        inner.write(payload)
        got = b""
        while len(got) < len(payload):
            try:
                got += inner.read(65536)
            except ssl.SSLWantReadError:
                if not pump():
                    break
        return got
    except (ConnectionError, ssl.SSLError, OSError):
        return b""
    finally:
        outer.close()


@pytest.fixture(scope="module")
def agent():
    a = start_dev_agent()
    yield a
    a.stop()


@pytest.fixture
def tls_echo(ext_ca):
    """A threaded TLS echo server for *.payments.example on loopback."""
    ctx = external_server_context(ext_ca, "*.payments.example")
    srv = socket.create_server((LO, 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                while data := s.recv(65536):
                    s.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield port
    srv.close()


@pytest.mark.slow
def test_gateway_registers_follows_the_registry_and_deregisters(agent, tls_echo, ext_ca, tmp_path):
    app_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ext_ca.configure_trust(app_ctx)
    held = held_port(LO)  # -address must name the port before the gateway starts: the test holds it
    gw_port = held.port
    doc = f"""
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {{name: payments}}
spec:
  hosts: ["*.payments.example"]
  ports: [{{number: {tls_echo}, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: {LO}}}]
  allowedSources: [web]
  egressGateway: egress-gateway
---
apiVersion: tether.dev/v1
kind: OutboundPolicy
metadata: {{name: mesh}}
spec: {{mode: REGISTRY_ONLY}}
"""
    (tmp_path / "egress.yaml").write_text(doc)
    assert run_cli("apply", "-f", str(tmp_path / "egress.yaml"), addr=agent.addr).returncode == 0
    gw = Proc([sys.executable, "-m", "tether.cli.main", "proxy", "-gateway", "egress", "-register",
               "-address", f"{LO}:{gw_port}", "-bind-address", f"{LO}:{gw_port}", "-log-format", "json",
               "-http-addr", agent.addr])
    try:
        gw.wait_line(gw.err, lambda line: line.startswith("READY gateway="))
        found = httpx.get(f"{agent.url}/v1/catalog/service/egress-gateway").json()
        assert [(s["ServiceAddress"], s["ServicePort"]) for s in found] == [(LO, gw_port)]
        web, batch = mesh_client(agent.url, "web"), mesh_client(agent.url, "batch")
        assert through_gateway(gw_port, web, app_ctx, "api.payments.example", tls_echo, b"pay") == b"pay"
        assert through_gateway(gw_port, batch, app_ctx, "api.payments.example", tls_echo, b"pay") == b""
        line = gw.wait_line(gw.out, lambda l: '"result":"denied"' in l)
        assert "does not allow source 'batch'" in json.loads(line)["rule"]
        # Removing the entry reaches the running gateway through its blocking watch.
        assert run_cli("external", "delete", "payments", addr=agent.addr).returncode == 0
        deadline = time.monotonic() + 10
        while through_gateway(gw_port, web, app_ctx, "api.payments.example", tls_echo, b"pay") == b"pay":
            assert time.monotonic() < deadline, "the gateway still routes a deleted entry"
        line = gw.wait_line(gw.out, lambda l: "REGISTRY_ONLY: no external service matches "
                            f"sni=api.payments.example:{tls_echo}" in l)
        assert json.loads(line)["source"].endswith("/svc/web")
    finally:
        assert gw.stop() == 0
        held.close()
    assert httpx.get(f"{agent.url}/v1/catalog/service/egress-gateway").json() == []


#: What the gateway process must not load (docs/performance.md): the CLI's and the control plane's.
HEAVY = {"typer", "rich", "httpx", "fastapi", "pydantic", "uvicorn", "click"}


def test_the_gateway_process_loads_no_cli_or_control_plane_code(agent):
    """`tether proxy` (Typer) execs `python -m tether.proxy.egress`; what that process imports,
    up to serving, is read from its own `-X importtime` report (PYTHONPROFILEIMPORTTIME)."""
    with held_port(LO) as port:
        gw = Proc([sys.executable, "-m", "tether.cli.main", "proxy", "-gateway", "egress", "-register",
                   "-address", f"{LO}:{port.port}", "-bind-address", f"{LO}:{port.port}", "-http-addr", agent.addr],
                  env={"PYTHONPROFILEIMPORTTIME": "1"})
        try:
            gw.wait_line(gw.err, lambda line: line.startswith("READY gateway="))
            with open(f"/proc/{gw.proc.pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            assert argv[1:3] == [b"-m", b"tether.proxy.egress"]  # the same pid, exec'd into the lean entry
        finally:
            assert gw.stop() == 0
    reports = "\n".join(gw.err).split("import time: self [us] | cumulative | imported package")
    assert len(reports) == 3  # before the first header, the CLI's interpreter, the gateway's
    cli, gateway = ({line.rsplit("|", 1)[1].strip() for line in r.splitlines() if line.startswith("import time:")}
                    for r in reports[1:])
    assert "typer" in cli  # the report is real: the CLI did load Typer before the exec
    top = {m.split(".")[0] for m in gateway}
    assert "tether" in top and not top & HEAVY, top & HEAVY
    assert not {m for m in gateway if m.startswith(("tether.control", "tether.agent", "tether.cli", "tether.store"))}
