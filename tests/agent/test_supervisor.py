"""The agent starts, restarts and stops managed sidecar processes; a killed agent leaves them
running and a restarted one adopts them (or stops them when their registration is gone)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import json
from pathlib import Path

import httpx
import pytest

from tether.testing.agent import RunningAgent, serve_in_process, start_tether

# A stand-in data plane: asks the agent for its own registration (as a real proxy does),
# listens on its port, and records its pid.
FAKE_PROXY = textwrap.dedent("""
    import json, os, socket, time, urllib.request
    addr, proxy_id = os.environ["TETHER_HTTP_ADDR"], os.environ["CONNECT_PROXY_ID"]
    me = json.load(urllib.request.urlopen(f"http://{addr}/v1/agent/service/{proxy_id}"))
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", me["Port"])); s.listen()
    with open(os.environ["PIDFILE"] + ".tmp", "w") as f: f.write(str(os.getpid()))
    os.rename(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
    while True: s.accept()[0].close()
""")


async def wait_for(predicate, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
    return result


def alive(pid: int) -> bool:
    """Running, and not a zombie (an orphaned sidecar's new parent may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture
async def api(tmp_path, monkeypatch):
    monkeypatch.setenv("PIDFILE", str(tmp_path / "proxy.pid"))
    async with serve_in_process("dev", node="n1", managed_proxies=True) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


async def test_daemon_command_is_started_restarted_and_stopped(api, tmp_path):
    pidfile = tmp_path / "proxy.pid"
    await api.put("/v1/agent/service/register", json={
        "name": "web", "port": 8080,
        "connect": {"proxy": {"exec_mode": "daemon", "command": [sys.executable, "-c", FAKE_PROXY]}}})
    port = (await api.get("/v1/agent/service/web-sidecar-proxy")).json()["Port"]

    first = int(await wait_for(lambda: pidfile.exists() and pidfile.read_text()))
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # its listener is up
    writer.close()

    pidfile.unlink()
    os.kill(first, signal.SIGKILL)  # a crash: the supervisor must start it again
    second = int(await wait_for(lambda: pidfile.exists() and pidfile.read_text()))
    assert second != first and alive(second)

    await api.put("/v1/agent/service/deregister/web")  # takes the sidecar and its process along
    await wait_for(lambda: not alive(second))


def _register_fake(agent: RunningAgent) -> int:
    with httpx.Client(base_url=agent.url, timeout=30) as api:
        api.put("/v1/agent/service/register", json={
            "name": "web", "port": 8080,
            "connect": {"proxy": {"exec_mode": "daemon", "command": [sys.executable, "-c", FAKE_PROXY]}}}
                ).raise_for_status()
        return api.get("/v1/agent/service/web-sidecar-proxy").json()["Port"]


def _agent(*args: str, env: dict[str, str]) -> RunningAgent:
    return start_tether("agent", "-dev", "-node", "n1", *args, env={"TETHER_LOG_LEVEL": "INFO", **env})


def _port(agent: RunningAgent) -> str:
    return agent.addr.rsplit(":", 1)[1]


def _log(agent: RunningAgent) -> str:
    return "".join(agent.log)


@pytest.fixture
def sidecar_pids():
    """PIDs a test's agents left behind; ended (by PID) at teardown, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def _sidecar_of_a_killed_agent(tmp_path, sidecar_pids, *args: str, **env: str) -> tuple[RunningAgent, int, int]:
    """An agent (ARGS) that started the fake proxy and was then killed with SIGKILL:
    (the dead agent, the proxy's pid, its port)."""
    pidfile = tmp_path / "proxy.pid"
    agent = _agent(*args, env={"PIDFILE": str(pidfile), **env})
    try:
        port = _register_fake(agent)
        pid = int(await wait_for(lambda: pidfile.exists() and pidfile.read_text()))
        sidecar_pids.append(pid)
    finally:
        agent.stop(signal.SIGKILL)
    pidfile.unlink()
    return agent, pid, port


async def test_a_killed_agent_leaves_its_sidecar_and_a_restarted_agent_adopts_it(tmp_path, sidecar_pids):
    data = tmp_path / "data"
    agent, pid, port = await _sidecar_of_a_killed_agent(tmp_path, sidecar_pids, "-data-dir", str(data))
    record = data / "proxies" / "web-sidecar-proxy.json"
    assert json.loads(record.read_text())["pid"] == pid
    assert (record.stat().st_mode & 0o777, record.parent.stat().st_mode & 0o777) == (0o600, 0o700)

    # Fail static: the sidecar outlives its agent and keeps its listener.
    assert alive(pid)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()

    again = _agent("-data-dir", str(data), "-http-port", _port(agent), env={"PIDFILE": str(tmp_path / "proxy.pid")})
    try:
        assert f"proxy web-sidecar-proxy: adopted pid {pid}" in _log(again)
        assert "started pid" not in _log(again)  # adopted, not replaced: same process, same ports
        assert alive(pid)
        # Adopted but supervised all the same: deregistration stops it (through its pidfd).
        with httpx.Client(base_url=again.url, timeout=30) as api:
            api.put("/v1/agent/service/deregister/web").raise_for_status()
        await wait_for(lambda: not alive(pid))
        assert not record.exists()
    finally:
        again.stop()


async def test_a_graceful_stop_stops_adopted_sidecars_and_leaves_no_record(tmp_path, sidecar_pids):
    data = tmp_path / "data"
    agent, pid, _ = await _sidecar_of_a_killed_agent(tmp_path, sidecar_pids, "-data-dir", str(data))
    again = _agent("-data-dir", str(data), "-http-port", _port(agent), env={"PIDFILE": str(tmp_path / "proxy.pid")})
    assert f"adopted pid {pid}" in _log(again)
    assert again.stop(signal.SIGTERM) == 0  # what Ctrl-C (SIGINT) or systemd's stop does
    assert not alive(pid)  # stopped before the agent exited
    assert list((data / "proxies").iterdir()) == []


async def test_an_agent_back_without_the_registration_stops_what_it_left(tmp_path, sidecar_pids):
    """A dev agent without -data-dir loses its registrations on restart; its sidecars go too.
    Without a data dir the records live in the runtime dir, keyed by the agent's address."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    agent, pid, _ = await _sidecar_of_a_killed_agent(tmp_path, sidecar_pids, XDG_RUNTIME_DIR=str(run))
    records = run / "tether" / f"agent-127.0.0.1_{_port(agent)}" / "proxies"
    assert [p.name for p in records.iterdir()] == ["web-sidecar-proxy.json"]
    assert alive(pid)

    again = _agent("-http-port", _port(agent), env={"XDG_RUNTIME_DIR": str(run)})
    try:
        assert f"stopping pid {pid} left by the previous agent: its registration is gone" in _log(again)
        await wait_for(lambda: not alive(pid))
    finally:
        again.stop()
    assert not records.parent.exists()  # an emptied runtime directory is removed


async def test_a_recycled_pid_is_never_adopted(tmp_path, sidecar_pids):
    """The record names a PID that now belongs to another process of the same user, with the
    right boot and start time even: without CONNECT_PROXY_ID it is not our sidecar."""
    data, pidfile = tmp_path / "data", tmp_path / "proxy.pid"
    agent, pid, _ = await _sidecar_of_a_killed_agent(tmp_path, sidecar_pids, "-data-dir", str(data))
    os.kill(pid, signal.SIGKILL)
    stranger = await asyncio.create_subprocess_exec("sleep", "600", env={"PATH": os.environ["PATH"]})
    record = data / "proxies" / "web-sidecar-proxy.json"
    doc = json.loads(record.read_text())
    stat = Path(f"/proc/{stranger.pid}/stat").read_text().rpartition(")")[2].split()
    record.write_text(json.dumps({**doc, "pid": stranger.pid, "start_ticks": int(stat[19])}))
    again = _agent("-data-dir", str(data), "-http-port", _port(agent), env={"PIDFILE": str(pidfile)})
    try:
        assert f"not adopting pid {stranger.pid}: pid {stranger.pid} is not the proxy" in _log(again)
        fresh = int(await wait_for(lambda: pidfile.exists() and pidfile.read_text()))
        sidecar_pids.append(fresh)
        assert fresh != stranger.pid and stranger.returncode is None  # a new sidecar; the stranger untouched
    finally:
        again.stop()
        stranger.kill()
        await stranger.wait()
