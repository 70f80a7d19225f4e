"""Agent-managed sidecars end to end (issue 5, points 1-3 and 7): the agent starts,
restarts and stops Tether's proxy (or a custom daemon); mutual TLS between sidecars with
authorization by service name; upstream listeners that insist on the exact identity;
access-log lines and /metrics from a managed sidecar.

One dev agent per module (real processes, real sockets, real TLS); each test registers
its own services so they do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import sys
import threading

import pytest

from proxy_kit import Mesh, metric_value, metrics, open_stream, port_of, process_alive, roundtrip, wait_for


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def test_sidecars_connect_web_to_db_over_mtls_and_the_agent_supervises_them(mesh):
    db = mesh.app()
    mesh.register("db", db.port)
    up = mesh.port()
    mesh.register("web", 1, upstreams=[{"destination_name": "db", "local_bind_port": up}])
    web_ready = mesh.ready("web")
    db_ready = mesh.ready("db")
    assert port_of(web_ready["upstream.db"]) == up
    mesh.healthy("db")

    assert wait_for("web -> db", lambda: roundtrip(up, b"hello through the mesh") == b"hello through the mesh")
    rec = mesh.wait_log("db's inbound access-log line", direction="inbound", destination="db", result="allowed")
    assert rec["source"].endswith("/svc/web")  # db's sidecar saw web's SPIFFE ID from its client certificate
    assert rec["bytes_received"] == len(b"hello through the mesh")

    # Supervised: kill the sidecar; the agent starts it again and traffic flows again.
    old = int(db_ready["pid"])
    mark = len(mesh.agent.log)
    os.kill(old, signal.SIGKILL)
    again = mesh.ready("db", after=mark)
    assert int(again["pid"]) != old
    assert wait_for("traffic through the restarted sidecar", lambda: roundtrip(up, b"back") == b"back")

    # Stopped on deregistration (SIGTERM: it drains and exits).
    pid = int(again["pid"])
    mesh.api.put("/v1/agent/service/deregister/db").raise_for_status()
    wait_for("the db sidecar to exit", lambda: not process_alive(pid))


def test_a_custom_daemon_command_is_run_with_the_proxy_environment(mesh, tmp_path):
    out = tmp_path / "env.json"
    script = ("import json, os, sys, time\n"
              f"json.dump({{k: os.environ.get(k) for k in ('TETHER_HTTP_ADDR', 'CONNECT_PROXY_ID', "
              f"'CONNECT_SIDECAR_FOR')}} | {{'pid': os.getpid()}}, open({str(out)!r} + '.tmp', 'w'))\n"
              f"os.rename({str(out)!r} + '.tmp', {str(out)!r})\n"
              "time.sleep(600)\n")
    body = {"name": "legacy", "port": 7000, "connect": {"proxy": {
        "exec_mode": "daemon", "command": [sys.executable, "-c", script]}}}
    mesh.api.put("/v1/agent/service/register", json=body).raise_for_status()
    seen = json.loads(wait_for("the custom proxy command to run", lambda: out.exists() and out.read_text()))
    assert seen["CONNECT_PROXY_ID"] == "legacy-sidecar-proxy"
    assert seen["CONNECT_SIDECAR_FOR"] == "legacy"
    assert seen["TETHER_HTTP_ADDR"] == mesh.agent.addr
    mesh.api.put("/v1/agent/service/deregister/legacy").raise_for_status()
    wait_for("the custom proxy to be stopped", lambda: not process_alive(seen["pid"]))


def test_authorization_by_name_denies_then_allows_and_logs_the_rule(mesh):
    mesh.intention("shop", "billing", "deny")
    api = mesh.app()
    mesh.register("billing", api.port)
    up = mesh.port()
    mesh.register("shop", 1, upstreams=[{"destination_name": "billing", "local_bind_port": up}])
    mesh.ready("shop")
    mesh.healthy("billing")

    # Denied: the TLS handshake succeeds, then billing's sidecar closes without a byte.
    denied = wait_for("a denied connection", lambda: roundtrip(up, b"x") == b"" and mesh.access_logs(
        destination="billing", result="denied"))[-1]
    assert denied["source"].endswith("/svc/shop")
    assert "shop -> billing (deny" in denied["reason"]
    assert api.accepted == 0  # the application never saw the denied caller

    mesh.intention("shop", "billing", "allow")
    assert wait_for("the allow to apply", lambda: roundtrip(up, b"paid") == b"paid")
    wait_for("an allowed line naming the rule", lambda: [
        r for r in mesh.access_logs(destination="billing", result="allowed") if "shop -> billing (allow" in r["reason"]])


def test_an_upstream_aborts_unless_the_server_is_exactly_the_destination(mesh):
    """A 'ledger' instance that presents another service's certificate is refused."""
    from tether.sdk import Service

    impostor = Service("notledger", agent_addr=mesh.agent.addr)
    ctx = impostor.server_ssl_context()
    listener = ctx.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True,
                               do_handshake_on_connect=False)
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
                conn.do_handshake()
                conn.recv(10)
                conn.close()
            except (OSError, ssl.SSLError):
                if listener.fileno() < 0:
                    return

    threading.Thread(target=serve, daemon=True).start()
    try:
        _check_impostor_refused(mesh, port)
    finally:
        listener.close()
        impostor.close()


def _check_impostor_refused(mesh, port: int) -> None:
    # Registered as a Connect-native instance of "ledger": discovery finds it, identity must not pass.
    mesh.api.put("/v1/agent/service/register", json={"name": "ledger", "id": "ledger-fake", "port": port,
                                                     "address": "127.0.0.1", "connect": {"native": True}})
    mesh.healthy("ledger")
    up = mesh.port()
    mesh.register("audit", 1, upstreams=[{"destination_name": "ledger", "local_bind_port": up}])
    mesh.ready("audit")
    rec = wait_for("an identity mismatch", lambda: roundtrip(up, b"secret") == b"" and mesh.access_logs(
        destination="ledger", result="upstream-identity-mismatch"))[-1]
    assert "/svc/notledger" in rec["reason"] and rec["reason"].endswith("/svc/ledger")


def test_access_log_and_metrics_of_a_managed_sidecar(mesh):
    app = mesh.app()
    admin_port = mesh.port()
    mesh.register("inventory", app.port, config={"admin_bind": f"127.0.0.1:{admin_port}"})
    up = mesh.port()
    mesh.register("orders", 1, upstreams=[{"destination_name": "inventory", "local_bind_port": up}])
    ready = mesh.ready("inventory")
    assert ready["admin"] == f"127.0.0.1:{admin_port}"  # Proxy.Config admin_bind
    mesh.ready("orders")
    mesh.healthy("inventory")
    mesh.flowing(up)
    with open_stream(up) as s:
        s.sendall(b"12345")
        assert s.recv(5) == b"12345"
    rec = mesh.wait_log("inventory's line", destination="inventory", result="allowed", direction="inbound",
                        bytes_received=7)
    assert set(rec) >= {"start_time", "duration_ms", "source", "source_address", "destination",
                        "upstream_address", "bytes_received", "bytes_sent", "result", "reason", "flags"}
    assert rec["upstream_address"] == f"127.0.0.1:{app.port}"
    assert rec["bytes_received"] == 7 and rec["bytes_sent"] == 7

    text = wait_for("an inbound connection in /metrics", lambda: (
        lambda t: t if metric_value(t, "tether_proxy_connections_total", direction="inbound", result="allowed") else None)(
            metrics(ready["admin"])))
    assert "tether_proxy_connect_latency_seconds_bucket" in text
    assert metric_value(text, "tether_proxy_config_stale") == 0

    # A bare TCP probe (a custom check, a load balancer) never reaches authorization or the
    # application: it is one handshake failure, logged and counted as closed-before-hello.
    sidecar_port = mesh.api.get("/v1/agent/service/inventory-sidecar-proxy").json()["Port"]
    reached = app.accepted
    socket.create_connection(("127.0.0.1", sidecar_port), timeout=5).close()
    probe = mesh.wait_log("the probe's line", destination="inventory", result="handshake-failure")
    assert probe["reason"].startswith("closed-before-hello")
    wait_for("the probe in /metrics", lambda: metric_value(metrics(ready["admin"]), "tether_proxy_handshake_failures_total",
                                                           direction="inbound", reason="closed-before-hello") == 1)
    assert app.accepted == reached


def test_an_unregistered_proxy_can_register_itself_and_logs_text(mesh):
    from proxy_kit import start_proxy, stop_proxy

    app = mesh.app()
    listen = mesh.port()
    proc, ready, log = start_proxy("-service", "kiosk", "-listen", f"127.0.0.1:{listen}", "-service-addr",
                                   f"127.0.0.1:{app.port}", "-register", "-log-format", "text", addr=mesh.agent.addr)
    try:
        entry = mesh.healthy("kiosk")[0]["Service"]
        assert (entry["ID"], entry["Port"], entry["Connect"]) == ("kiosk-proxy", listen, {"Native": True})
        up = mesh.port()
        mesh.register("visitor", 1, upstreams=[{"destination_name": "kiosk", "local_bind_port": up}])
        mesh.ready("visitor")
        assert wait_for("visitor -> kiosk", lambda: roundtrip(up, b"hey") == b"hey")
        line = wait_for("a text access-log line", lambda: [l for l in log if l.startswith("start_time=")
                                                           and "result=allowed" in l])[0]
        assert "destination=kiosk" in line and "/svc/visitor" in line
    finally:
        assert stop_proxy(proc) == 0
    assert "kiosk-proxy" not in mesh.api.get("/v1/agent/services").json()  # deregistered on the way out
