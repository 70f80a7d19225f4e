"""Sidecars and the life of their agent (issue 10, items 1 and 2): kill -9 of the agent
while web -> db traffic flows fails no connection and a restarted agent adopts the same
sidecar processes; a graceful agent stop shows no watch a 500; SIGHUP reloads a sidecar
without dropping a connection; a sidecar whose registration is gone exits, and one alone
past its leaf's validity stops accepting."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import pytest

from proxy_kit import (
    DEADLINE, EchoServer, Mesh, Traffic, metric_value, metrics, open_stream, process_alive, roundtrip, start_proxy,
    still_open, stop_proxy, wait_for,
)
from tether.testing.agent import RunningAgent, serve_in_process, start_tether
from tether.testing.ports import held_port

#: How long the agent stays dead while traffic must keep flowing (issue 10's "for 60 s").
OUTAGE = 60.0


def _agent(data_dir, *args: str) -> RunningAgent:
    return start_tether("agent", "-dev", "-node", "node1", "-data-dir", str(data_dir), *args,
                        env={"TETHER_LOG_LEVEL": "INFO"})


def _sidecar_pids(agent: RunningAgent) -> dict[str, int]:
    return {m.group(2): int(m.group(3)) for line in agent.log
            for m in [re.search(r"READY (.*) service=(\S+) pid=(\d+)", line)] if m}


def _kill_leftovers(pids) -> None:
    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGTERM)
    wait_for("the sidecars to exit", lambda: not any(process_alive(p) for p in pids), timeout=15)


@pytest.mark.slow
def test_kill_9_of_the_agent_fails_no_connection_and_a_restarted_agent_adopts_the_sidecars(tmp_path):
    api_port = held_port()  # the restarted agent comes back on the same address: its sidecars follow it
    agent = _agent(tmp_path / "data", "-http-port", str(api_port.port))
    mesh = Mesh(agent, httpx.Client(base_url=agent.url, timeout=30))
    pids: dict[str, int] = {}
    again = None
    try:
        db = mesh.app()
        mesh.register("db", db.port)
        up = mesh.port()
        mesh.register("web", 1, upstreams=[{"destination_name": "db", "local_bind_port": up}])
        ready = {name: mesh.ready(name) for name in ("web", "db")}
        pids = {name: int(r["pid"]) for name, r in ready.items()}
        mesh.healthy("db")
        mesh.flowing(up)
        traffic = Traffic(up, [open_stream(up) for _ in range(3)], OUTAGE + 3 * DEADLINE)

        agent.stop(signal.SIGKILL)
        killed = time.monotonic()
        for name, r in ready.items():  # both sidecars know they are on their own now
            wait_for(f"{name}'s proxy to notice", lambda: metric_value(metrics(r["admin"]), "tether_proxy_config_stale") == 1)
        wait_for(f"{OUTAGE:g}s without an agent", lambda: time.monotonic() - killed >= OUTAGE or traffic.failures,
                 timeout=OUTAGE + DEADLINE, every=0.5)
        assert traffic.failures == [], "connections failed while the agent was down"
        served_alone = traffic.ok

        again = _agent(tmp_path / "data", "-http-port", str(api_port.port))
        for name, pid in pids.items():
            assert f"proxy {name}-sidecar-proxy: adopted pid {pid}" in "".join(again.log)
            assert process_alive(pid)
        assert "started pid" not in "".join(again.log)  # no new process, so no port clash either
        for name, r in ready.items():  # the adopted sidecars follow the new agent
            wait_for(f"{name}'s proxy to follow the agent again",
                     lambda: metric_value(metrics(r["admin"]), "tether_proxy_config_stale") == 0)
        mesh.api = httpx.Client(base_url=again.url, timeout=30)
        mesh.healthy("db")
        traffic.stop()
        assert traffic.failures == []
        assert served_alone > OUTAGE / Traffic.EVERY / 4  # new connections kept coming the whole time
        assert all(still_open(s) for s in traffic.held)
    finally:
        if again is not None:
            assert again.stop() == 0  # graceful: the adopted sidecars drain and exit with it
        agent.stop()
        for app in mesh.apps:
            app.close()
        _kill_leftovers(pids.values())


def test_a_graceful_agent_stop_shows_no_watch_a_500(tmp_path):
    """SIGTERM: the managed sidecars drain and exit while the API still answers; requests cut
    by the API's own shutdown (a hand-run proxy's blocking watches) get 503, never 500."""
    agent = _agent(tmp_path / "data")
    mesh = Mesh(agent, httpx.Client(base_url=agent.url, timeout=30))
    db = mesh.app()
    mesh.register("db", db.port)
    pid = int(mesh.ready("db")["pid"])
    mesh.healthy("db")
    up = mesh.port()
    proc, _, log = start_proxy("-service", "web", "-upstream", f"db:{up}", addr=agent.addr)
    try:
        mesh.flowing(up)
        assert agent.stop(signal.SIGTERM) == 0
        assert not process_alive(pid)
        wait_for("the hand-run proxy to see the agent go", lambda: any("unreachable" in line for line in log))
        assert not [line for line in agent.log + log if " 500" in line or "Exception in ASGI" in line]
        assert any("proxy db-sidecar-proxy: stopped" in line for line in agent.log)
    finally:
        stop_proxy(proc)
        db.close()
        _kill_leftovers([pid])


def test_sighup_reloads_a_sidecar_without_dropping_a_connection(tmp_path):
    mesh = Mesh(_agent(tmp_path / "data"), None)
    mesh.api = httpx.Client(base_url=mesh.agent.url, timeout=30)
    try:
        db = mesh.app()
        mesh.register("db", db.port)
        up = mesh.port()
        mesh.register("web", 1, upstreams=[{"destination_name": "db", "local_bind_port": up}])
        pid = int(mesh.ready("web")["pid"])
        mesh.healthy("db")
        mesh.flowing(up)
        held = open_stream(up)
        mark = len(mesh.agent.log)

        os.kill(pid, signal.SIGHUP)
        wait_for("the reload", lambda: any("reloaded: registration, identity, roots, authorization and 1 upstream(s)"
                                           in line for line in mesh.agent.log[mark:]))
        assert process_alive(pid) and still_open(held)
        assert roundtrip(up, b"after the reload") == b"after the reload"
        # A reload re-reads the registration: a change (the upstream moves) is applied from it;
        # the connection on the old listener runs on.
        up2 = mesh.port()
        mesh.register("web", 1, upstreams=[{"destination_name": "db", "local_bind_port": up2}])
        os.kill(pid, signal.SIGHUP)
        mesh.flowing(up2)
        assert process_alive(pid) and still_open(held)
        assert int(mesh.ready("web")["pid"]) == pid
    finally:
        mesh.close()


def test_a_sidecar_whose_registration_is_gone_exits(tmp_path):
    """A hand-run sidecar (the agent runs none itself) exits 0 when its registration goes."""
    agent = start_tether("agent", "-dev", "-node", "node1", "-no-managed-proxies")
    try:
        api = httpx.Client(base_url=agent.url, timeout=30)
        api.put("/v1/agent/service/register", json={"name": "web", "port": 1, "connect": {"sidecar_service": {
            }}}).raise_for_status()
        proc, _, log = start_proxy("-sidecar-for", "web", addr=agent.addr)
        api.put("/v1/agent/service/deregister/web").raise_for_status()
        assert proc.wait(DEADLINE) == 0
        assert any("registration web-sidecar-proxy is gone from the agent" in line for line in log)
    finally:
        agent.stop()


async def test_a_sidecar_alone_past_its_leaf_validity_stops_accepting_and_exits():
    """Fail static lasts as long as the identity: once the leaf has expired with no agent to
    renew it, the sidecar stops accepting, says why, drains and exits 1."""
    app = EchoServer()
    async with serve_in_process("dev", ca_min_leaf_ttl=2.0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            (await api.put("/v1/connect/ca/configuration", json={"Config": {"LeafCertTTL": "4s"}})).raise_for_status()
        proc, ready, log = await asyncio.to_thread(
            start_proxy, "-service", "web", "-listen", "127.0.0.1:0", "-service-addr", f"127.0.0.1:{app.port}",
            addr=url.removeprefix("http://"))
    try:  # the agent is gone now
        assert await asyncio.to_thread(proc.wait, DEADLINE) == 1
        line = next(line for line in log if "no longer accepting connections" in line)
        assert "leaf certificate of web expired at" in line and "has been unreachable since" in line
        with pytest.raises(OSError):
            roundtrip(int(ready["inbound"].rsplit(":", 1)[1]), b"x")
    finally:
        stop_proxy(proc)
        app.close()


def test_an_adopted_sidecar_keeps_its_environment_and_so_its_acl_token(tmp_path):
    """With ACLs (default deny) a managed sidecar talks to its agent with the proxy secret in
    its environment; adopted, it is not restarted, and the restarted agent still honours it."""
    management = "11111111-2222-3333-4444-555555555555"
    config = tmp_path / "acl.hcl"
    config.write_text(f'acl {{\n enabled = true\n default_policy = "deny"\n'
                      f' tokens {{\n  initial_management = "{management}"\n }}\n}}\n')
    config.chmod(0o600)
    api_port = held_port()
    agent = _agent(tmp_path / "data", "-config-file", str(config), "-http-port", str(api_port.port))
    api = httpx.Client(base_url=agent.url, timeout=30, headers={"X-Consul-Token": management})
    mesh = Mesh(agent, api)
    pid = None
    again = None
    try:
        token = api.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "db"}]}).json()["SecretID"]
        app = mesh.app()
        api.put("/v1/agent/service/register", headers={"X-Consul-Token": token}, json={
            "name": "db", "port": app.port, "connect": {"sidecar_service": {}}}).raise_for_status()
        ready = mesh.ready("db")
        pid = int(ready["pid"])

        def stale() -> float:
            return metric_value(metrics(ready["admin"]), "tether_proxy_config_stale")

        agent.stop(signal.SIGKILL)
        wait_for("the sidecar to notice", lambda: stale() == 1)
        again = _agent(tmp_path / "data", "-config-file", str(config), "-http-port", str(api_port.port))
        assert f"adopted pid {pid}" in "".join(again.log)
        wait_for("the adopted sidecar's watches to be answered again", lambda: stale() == 0)
        assert not any("403" in line or "Permission denied" in line for line in agent.log)
    finally:
        if again is not None:
            again.stop()
        agent.stop()
        for app in mesh.apps:
            app.close()
        if pid:
            _kill_leftovers([pid])
