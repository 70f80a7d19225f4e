"""A native SDK service and a proxied service talk both ways (issue 5, point 8): the proxy's
upstream listener dials a Connect-native Python server and checks its identity; the SDK's
`connect` reaches a proxied service through its sidecar, which authorizes the SDK's leaf."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from proxy_kit import Mesh, roundtrip, wait_for


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def _serve_native(service, listener: socket.socket, seen: list) -> None:
    ctx = service.server_ssl_context()
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            with ctx.wrap_socket(raw, server_side=True) as tls:
                decision = service.authorize(tls)
                seen.append((decision.allowed, tls.getpeercert()))
                if decision.allowed:
                    while data := tls.recv(65536):
                        tls.sendall(b"native:" + data)
        except (OSError, ssl.SSLError):
            pass


def test_native_and_proxied_services_talk_both_ways(mesh):
    from tether.sdk import Service

    native = Service("reports", agent_addr=mesh.agent.addr)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list = []
    threading.Thread(target=_serve_native, args=(native, listener, seen), daemon=True).start()
    try:
        mesh.api.put("/v1/agent/service/register", json={
            "name": "reports", "port": listener.getsockname()[1], "address": "127.0.0.1",
            "connect": {"native": True}}).raise_for_status()
        app = mesh.app()
        up = mesh.port()
        mesh.register("dashboard", app.port, upstreams=[{"destination_name": "reports", "local_bind_port": up}])
        mesh.ready("dashboard")
        mesh.healthy("reports")
        mesh.healthy("dashboard")

        # proxied -> native: dashboard's sidecar dials the SDK server with dashboard's leaf.
        assert wait_for("dashboard -> reports", lambda: roundtrip(up, b"q1", timeout=10) == b"native:q1")
        assert seen and seen[-1][0] is True

        # native -> proxied: the SDK verifies dashboard's sidecar is dashboard, the sidecar authorizes reports.
        with native.connect("dashboard") as tls:
            tls.sendall(b"hello proxied")
            got = b""
            while len(got) < 13:
                got += tls.recv(64)
            assert got == b"hello proxied"
        rec = mesh.wait_log("dashboard's inbound line", destination="dashboard", direction="inbound", result="allowed")
        assert rec["source"].endswith("/svc/reports")
    finally:
        listener.close()
        native.close()
