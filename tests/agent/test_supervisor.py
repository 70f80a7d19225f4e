"""The agent starts, restarts and stops managed sidecar processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import httpx
import pytest

from tether.testing.agent import serve_in_process

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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


async def test_sidecars_die_with_a_killed_agent(tmp_path, monkeypatch):
    """kill -9 of the agent must not leave its proxies holding their ports."""
    from tether.testing.agent import start_dev_agent

    pidfile = tmp_path / "proxy.pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))  # inherited by the agent, then by its proxies
    agent = start_dev_agent(managed_proxies=True)
    try:
        async with httpx.AsyncClient(base_url=agent.url, timeout=30) as api:
            await api.put("/v1/agent/service/register", json={
                "name": "web", "port": 8080,
                "connect": {"proxy": {"exec_mode": "daemon", "command": [sys.executable, "-c", FAKE_PROXY]}}})
        pid = int(await wait_for(lambda: pidfile.exists() and pidfile.read_text()))
        assert alive(pid)
    finally:
        agent.stop(signal.SIGKILL)
    await wait_for(lambda: not alive(pid) or _zombie(pid))


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
