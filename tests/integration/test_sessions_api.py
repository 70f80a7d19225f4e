"""Sessions and KV locks through py-consul (unchanged) against `tether agent -dev`, and the lock
recipe: two `tether lock` processes contend, the winner's health check fails, the other takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import consul
import httpx
import pytest
from consul.exceptions import BadRequest

from tether.testing.agent import ThreadedNode, start_tether

NODE = "node1"


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


def until(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return found


def test_session_lifecycle_and_shapes(c, dev_agent):
    sid = c.session.create(name="web-lock", ttl=30, lock_delay=5, behavior="delete")
    info = c.session.info(sid)[1]
    assert info["ID"] == sid and info["Name"] == "web-lock" and info["Node"] == NODE
    assert (info["TTL"], info["LockDelay"], info["Behavior"]) == ("30s", 5_000_000_000, "delete")
    assert info["NodeChecks"] == ["serfHealth"] and info["CreateIndex"] > 0
    assert sid in [s["ID"] for s in c.session.list()[1]]
    assert sid in [s["ID"] for s in c.session.node(NODE)[1]]
    assert c.session.renew(sid)["ID"] == sid
    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    with pytest.raises(consul.NotFound):
        c.session.renew(sid)
    r = httpx.put(f"{dev_agent.url}/v1/session/create", json={"TTL": "5s"})  # py-consul refuses it itself
    assert r.status_code == 400 and "Invalid Session TTL '5s'" in r.text
    with pytest.raises(BadRequest, match="Missing check 'nope' registration"):
        c.session.create(checks=["nope"])


def test_session_list_blocks_until_a_session_changes():
    with ThreadedNode("dev", node=NODE) as node:
        url = urlparse(node.url)
        client = consul.Consul(host=url.hostname, port=url.port)
        index, _ = client.session.list()
        found = {}
        watcher = threading.Thread(target=lambda: found.update(r=client.session.list(index=index, wait="20s")))
        watcher.start()
        node.wait_parked(lambda n: n.store.parked("sessions/"))  # the watcher is waiting: the create must wake it
        sid = client.session.create()
        watcher.join(30)
        assert sid in [s["ID"] for s in found["r"][1]] and int(found["r"][0]) > int(index)


def test_kv_acquire_release_with_py_consul(c):
    a, b = c.session.create(lock_delay=0), c.session.create(lock_delay=0)
    assert c.kv.put("locks/job", "a", acquire=a) is True
    assert c.kv.put("locks/job", "b", acquire=b) is False
    _, pair = c.kv.get("locks/job")
    assert (pair["Session"], pair["LockIndex"], pair["Value"]) == (a, 1, b"a")
    assert c.kv.put("locks/job", "b", release=b) is False
    assert c.kv.put("locks/job", "done", release=a) is True
    _, pair = c.kv.get("locks/job")
    assert ("Session" not in pair or pair["Session"] == "") and pair["LockIndex"] == 1
    assert c.kv.put("locks/job", "b", acquire=b) is True and c.kv.get("locks/job")[1]["LockIndex"] == 2
    c.session.destroy(b)  # Behavior release: the key stays, unlocked
    assert c.kv.get("locks/job")[1]["Session"] in ("", None)
    with pytest.raises(BadRequest, match="invalid session"):
        c.kv.put("locks/job", "x", acquire=b)
    c.session.destroy(a)


def test_deregistering_the_node_invalidates_its_sessions(c):
    c.catalog.register("ext-s", "192.0.2.20")
    sid = c.session.create(node="ext-s", checks=[], behavior="delete", lock_delay=0)
    assert c.kv.put("locks/ext", "x", acquire=sid) is True
    c.catalog.deregister("ext-s")
    until(lambda: c.session.info(sid)[1] is None, "the session of a deregistered node to go")
    assert c.kv.get("locks/ext")[1] is None  # Behavior delete


def _lock(addr: str, check: str, marker: Path) -> subprocess.Popen:
    child = [sys.executable, "-c",
             f"import pathlib, time; pathlib.Path({str(marker)!r}).write_text('held'); time.sleep(120)"]
    return subprocess.Popen([sys.executable, "-m", "tether.cli.main", "lock", "-check", check, "-lock-delay", "1s",
                             "-no-shell", "svc/leader", "--", *child],
                            env={**os.environ, "TETHER_HTTP_ADDR": addr}, stderr=subprocess.PIPE, text=True)


def test_two_lock_processes_the_winner_fails_its_check_the_other_takes_over(c, dev_agent, tmp_path):
    for name in ("lock-a", "lock-b"):
        c.agent.check.register(name, check=consul.Check.ttl("10m"))
        c.agent.check.ttl_pass(name)
    a = _lock(dev_agent.addr, "lock-a", tmp_path / "a")
    b = None
    try:
        until(lambda: (tmp_path / "a").exists(), "the first process to take the lock and run its command")
        holder = c.kv.get("svc/leader/.lock")[1]["Session"]
        b = _lock(dev_agent.addr, "lock-b", tmp_path / "b")
        until(lambda: len(c.session.list()[1]) == 2, "the second process to create its session")
        assert not (tmp_path / "b").exists() and c.kv.get("svc/leader/.lock")[1]["Session"] == holder

        c.agent.check.ttl_fail("lock-a")  # the winner's health fails: its session is invalidated
        assert a.wait(30) == 1 and "lost" in a.stderr.read()
        until(lambda: (tmp_path / "b").exists(), "the second process to take over")
        pair = c.kv.get("svc/leader/.lock")[1]
        assert pair["Session"] not in ("", holder) and pair["LockIndex"] == 2
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    assert b.returncode == 0  # its command was stopped by the signal; the lock was let go
    assert c.kv.get("svc/leader/.lock")[1]["Session"] in ("", None) and c.session.list()[1] == []


def test_a_session_made_through_a_client_agent_lives_on_its_node(tmp_path):
    server = start_tether("server", "-data-dir", str(tmp_path / "server"))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "worker-1")
    try:
        url = urlparse(agent.url)
        client = consul.Consul(host=url.hostname, port=url.port)
        until(lambda: client.catalog.node("worker-1")[1] is not None, "the agent's node in the catalog")
        sid = client.session.create(lock_delay=0)
        assert client.session.info(sid)[1]["Node"] == "worker-1"  # the agent's node, not the server's
        assert client.kv.put("svc/x", "v", acquire=sid) is True
        direct = httpx.get(f"{server.url}/v1/session/create", timeout=10)
        assert direct.status_code == 405
        r = httpx.put(f"{server.url}/v1/session/create", timeout=10)  # the server alone has no node of its own
        assert r.status_code == 400 and r.text.startswith("Node: missing")
    finally:
        agent.stop()
        server.stop()
