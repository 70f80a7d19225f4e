"""Whole processes: crash durability, server + node agent, the CLI's exit codes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal

import httpx
import pytest

from tether.testing.agent import open_in_process, start_dev_agent, start_tether, until_parked
from tether.testing.agent import run_cli as tether


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    data = tmp_path / "data"
    agent = start_dev_agent(data_dir=data)
    api = httpx.Client(base_url=agent.url)
    api.put("/v1/agent/service/register", json={"Name": "web", "Port": 80, "Check": {"TTL": "1h"},
                                                "Connect": {"SidecarService": {}}}).raise_for_status()
    api.put("/v1/agent/check/pass/service:web").raise_for_status()
    for i in range(50):
        assert api.put(f"/v1/kv/k{i}", content=f"value {i}").json() is True
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL

    agent = start_dev_agent(data_dir=data)
    api = httpx.Client(base_url=agent.url)
    try:
        entries = api.get("/v1/kv/", params={"recurse": 1}).json()
        assert {e["Key"]: base64.b64decode(e["Value"]) for e in entries} == {
            f"k{i}": f"value {i}".encode() for i in range(50)}  # every acknowledged write, as written
        services = api.get("/v1/agent/services").json()
        assert set(services) == {"web", "web-sidecar-proxy"}  # the agent rebuilt its view from the catalog
        assert api.get("/v1/agent/checks").json()["service:web"]["Status"] == "passing"
        api.put("/v1/agent/check/fail/service:web").raise_for_status()  # and runs the restored TTL check
        assert api.get("/v1/agent/checks").json()["service:web"]["Status"] == "critical"
        assert os.stat(data / "state.db").st_mode & 0o777 == 0o600
    finally:
        agent.stop()


def test_server_and_node_agent(tmp_path):
    server = start_tether("server", "-data-dir", str(tmp_path / "server"))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "web-node")
    try:
        api = httpx.Client(base_url=agent.url, timeout=30)
        api.put("/v1/agent/service/register", json={"name": "web", "port": 8080}).raise_for_status()
        # Catalog reads through the agent are forwarded to the server ...
        assert api.get("/v1/catalog/service/web").json()[0]["Node"] == "web-node"
        # ... and the server has it too.
        direct = httpx.get(f"{server.url}/v1/catalog/services").json()
        assert "web" in direct
        members = api.get("/v1/agent/members").json()
        assert [(m["Name"], m["Status"]) for m in members] == [("web-node", 1)]
        # Errors from the server come back through the agent as they are.
        r = api.put("/v1/kv/big", content=b"x" * (600 * 1024))
        assert r.status_code == 413
    finally:
        agent.stop()
        server.stop()


async def test_blocking_queries_through_the_node_agents_forwarder(tmp_path):
    """The node agent streams a blocking query to the server, where it parks until the write."""
    async with open_in_process("server", data_dir=tmp_path / "server") as server, \
            open_in_process("agent", server_addr=server.url.removeprefix("http://"), node="web-node") as agent, \
            httpx.AsyncClient(base_url=agent.url, timeout=30) as api:
        index = (await api.get("/v1/kv/cfg")).headers["X-Consul-Index"]
        watch = asyncio.create_task(api.get("/v1/kv/cfg", params={"index": index, "wait": "20s"}))
        await until_parked(lambda: server.store.parked("kv/cfg"))
        assert not watch.done()
        await api.put("/v1/kv/cfg", content=b"v1")
        r = await asyncio.wait_for(watch, 10)
        assert r.status_code == 200 and json.loads(r.text)[0]["Key"] == "cfg"
        assert int(r.headers["X-Consul-Index"]) > int(index)


@pytest.fixture(scope="module")
def addr(dev_agent):
    return dev_agent.addr


def test_cli_services_register_and_deregister(addr, tmp_path):
    path = tmp_path / "web.json"
    path.write_text(json.dumps({"service": {"name": "cliweb", "port": 8080, "connect": {"sidecar_service": {}}}}))
    r = tether("services", "register", str(path), addr=addr)
    assert r.returncode == 0 and "Registered service: cliweb" in r.stdout
    r = tether("catalog", "services", addr=addr)
    assert "cliweb" in r.stdout.split() and "cliweb-sidecar-proxy" in r.stdout.split()
    r = tether("services", "deregister", "-id", "cliweb", addr=addr)
    assert r.returncode == 0
    assert "cliweb" not in tether("catalog", "services", addr=addr).stdout


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    ("{oops", "not valid JSON"),
    ('{"service": {"name": "x", "port": 99999}}', "Port"),
    ('{"nothing": 1}', "\"service\""),
])
def test_cli_bad_definition_file_exits_2_with_one_line(addr, tmp_path, content, words):
    path = tmp_path / "def.json"
    if content is not None:
        path.write_text(content)
    r = tether("services", "register", str(path), addr=addr)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_kv_round_trip_and_exit_codes(addr):
    assert tether("kv", "put", "cli/greeting", "hello", addr=addr).returncode == 0
    r = tether("kv", "get", "cli/greeting", addr=addr)
    assert (r.returncode, r.stdout) == (0, "hello\n")
    assert tether("kv", "put", "cli/stdin", "-", addr=addr, stdin="from stdin").returncode == 0
    assert tether("kv", "get", "cli/stdin", addr=addr).stdout == "from stdin\n"
    r = tether("kv", "put", "-cas", "-modify-index", "0", "cli/greeting", "again", addr=addr)
    assert r.returncode == 1 and "CAS failed" in r.stderr
    assert tether("kv", "get", "-recurse", "cli/", addr=addr).stdout.splitlines() == [
        "cli/greeting:hello", "cli/stdin:from stdin"]
    assert tether("kv", "delete", "-recurse", "cli/", addr=addr).returncode == 0
    r = tether("kv", "get", "cli/greeting", addr=addr)
    assert r.returncode == 1 and "No key exists" in r.stderr


def test_cli_unreachable_agent_and_usage_errors():
    r = tether("catalog", "services", addr="127.0.0.1:1")
    assert r.returncode == 2 and "cannot reach the Tether agent" in r.stderr and "TETHER_HTTP_ADDR" in r.stderr
    r = tether("kv", "get", "-nope", "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [
    ["agent"], ["server"], ["services", "register"], ["services", "deregister"], ["catalog", "services"],
    ["catalog", "nodes"], ["members"], ["kv", "get"], ["kv", "put"], ["kv", "delete"],
])
def test_every_command_has_help_with_an_example(command):
    r = tether(*command, "--help")
    assert r.returncode == 0 and "Example" in r.stdout, r.stdout
