"""Turning ACLs on for a running dev-style setup keeps every managed sidecar serving
(issue 9, "Done means").

The operator's path, as docs/acl.md gives it: a dev agent with a data dir runs web -> db with
managed sidecars and no tokens; the agent is restarted in place (SIGUSR2: its sidecars keep
serving) with a config file turning ACLs on under `default_policy = deny`; the operator
creates a token per service and re-registers each service with its token. Throughout, a new
web -> db connection every 50 ms and three held ones: not one fails, and the sidecars are the
same processes. Afterwards the sidecars follow the agent with their services' tokens (an
intention flip reaches them), while an anonymous caller can no longer take db's identity.
"""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest

from proxy_kit import DEADLINE, Mesh, Traffic, metric_value, metrics, open_stream, process_alive, roundtrip, wait_for
from tether.testing.agent import RunningAgent, start_tether
from tether.testing.ports import held_port

MANAGEMENT = "9d1c5e1a-0b6e-4c59-9d57-3c1f7a2b8e40"
#: Long enough for the restart, the token work and the sidecars catching up, with margin.
TRAFFIC_SECONDS = 8 * DEADLINE


def _agent(data_dir, port: int, *args: str) -> RunningAgent:
    return start_tether("agent", "-dev", "-node", "node1", "-data-dir", str(data_dir), "-http-port", str(port), *args,
                        env={"TETHER_LOG_LEVEL": "INFO"})


def _register(api: httpx.Client, name: str, port: int, token: str = "", upstreams: list | None = None) -> None:
    body = {"name": name, "port": port,
            "connect": {"sidecar_service": {"proxy": {"upstreams": upstreams or []}}}}
    r = api.put("/v1/agent/service/register", json=body, headers={"X-Consul-Token": token} if token else {})
    assert r.status_code == 200, r.text


@pytest.mark.slow
def test_turning_acls_on_keeps_every_sidecar_serving(tmp_path):
    data, api_port = tmp_path / "data", held_port()
    config = tmp_path / "acl.json"
    config.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                          "tokens": {"initial_management": MANAGEMENT}}}))
    config.chmod(0o600)
    first = _agent(data, api_port.port)
    mesh = Mesh(first, httpx.Client(base_url=first.url, timeout=30))
    again: RunningAgent | None = None
    pids: dict[str, int] = {}
    try:
        db = mesh.app()
        up = mesh.port()
        web_upstreams = [{"destination_name": "db", "local_bind_port": up}]
        _register(mesh.api, "db", db.port)
        _register(mesh.api, "web", 1, upstreams=web_upstreams)
        ready = {name: mesh.ready(name) for name in ("web", "db")}
        pids = {name: int(r["pid"]) for name, r in ready.items()}
        # With ACLs on, default_policy = deny is also the default intention (as in Consul):
        # traffic allowed only by the dev default must be written down before the switch.
        mesh.intention("web", "db", "allow")
        mesh.healthy("db")
        mesh.flowing(up)
        traffic = Traffic(up, [open_stream(up) for _ in range(3)], TRAFFIC_SECONDS)

        # 1. Restart in place with ACLs on: the sidecars serve alone meanwhile.
        os.kill(first.proc.pid, signal.SIGUSR2)
        assert first.proc.wait(DEADLINE) == 0
        assert all(process_alive(pid) for pid in pids.values())
        again = _agent(data, api_port.port, "-config-file", str(config))
        log = "".join(again.log)
        for name, pid in pids.items():
            assert f"proxy {name}-sidecar-proxy: adopted pid {pid}" in log
        admin = httpx.Client(base_url=again.url, timeout=30, headers={"X-Consul-Token": MANAGEMENT})
        anonymous = httpx.Client(base_url=again.url, timeout=30)

        # 2. ACLs are on: what anyone could do before is refused now, the sidecars included
        # (their services have no tokens yet). They say so and keep what they have: an
        # intention written meanwhile must not reach them as a policy with rules missing.
        r = anonymous.get("/v1/agent/connect/ca/leaf/db")
        assert r.status_code == 403 and "service:write" in r.text, r.text
        r = admin.put("/v1/connect/intentions/exact", params={"source": "cache", "destination": "db"},
                      json={"Action": "allow"})
        assert r.status_code == 200, r.text
        for name in ("web", "db"):
            wait_for(f"{name}'s proxy to say its authorization watch is refused", lambda: any(
                "watch authz refused" in line and f'on "{name}"' in line for line in first.log))

        # 3. A token per service; each service re-registered with its own.
        tokens = {}
        for name in ("web", "db"):
            r = admin.put("/v1/acl/token", json={"Description": f"{name}'s registration",
                                                 "ServiceIdentities": [{"ServiceName": name}]})
            assert r.status_code == 200, r.text
            tokens[name] = r.json()["SecretID"]
        _register(admin, "db", db.port, tokens["db"])
        _register(admin, "web", 1, tokens["web"], web_upstreams)

        # 4. The adopted sidecars follow the agent again, now as their services.
        for name, r in ready.items():
            wait_for(f"{name}'s proxy to follow the agent with its token",
                     lambda: metric_value(metrics(r["admin"]), "tether_proxy_config_stale") == 0)
        mesh.api = admin
        mesh.healthy("db")
        traffic.stop()
        assert traffic.failures == [], "connections failed while ACLs were turned on"
        assert traffic.ok > 0
        assert all(process_alive(pid) for pid in pids.values())
        assert "started pid" not in "".join(again.log)  # the same processes throughout

        # 5. The sidecars' watches work with their tokens: a deny reaches db's sidecar, an
        # allow brings traffic back.
        mesh.intention("web", "db", "deny")
        wait_for("db's sidecar to refuse web", lambda: _refused(up))
        mesh.intention("web", "db", "allow")
        mesh.flowing(up)
        assert roundtrip(up, b"with ACLs on") == b"with ACLs on"
    finally:
        if again is not None:
            assert again.stop() == 0  # graceful: the sidecars drain and exit with it
        first.stop()
        mesh.agent = again or first
        for app in mesh.apps:
            app.close()
        for pid in pids.values():
            if process_alive(pid):
                os.kill(pid, signal.SIGTERM)
        api_port.close()


def _refused(port: int) -> bool:
    try:
        return roundtrip(port, b"denied?") != b"denied?"
    except OSError:
        return True
