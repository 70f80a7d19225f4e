"""Several stateless `tether server` processes on one etcd, and agents that know them all."""

from __future__ import annotations

import base64
import signal
import threading

import httpx
import pytest

from tether.testing.agent import start_tether
from etcd_kit import connected_servers, kv_index, start_servers, until

pytestmark = pytest.mark.slow  # real server processes and elections: seconds each


def test_servers_on_one_etcd_serve_any_request(etcd_cluster):
    servers = start_servers(etcd_cluster, 3)
    try:
        # They raced to initialise one prefix: one cluster, one CA, whoever won.
        clusters = {httpx.get(f"{s.url}/v1/internal/tether/cluster").json()["ClusterID"] for s in servers}
        roots = {httpx.get(f"{s.url}/v1/connect/ca/roots").json()["ActiveRootID"] for s in servers}
        assert len(clusters) == 1 and len(roots) == 1
        # A blocking query on server 2 is woken by a write through server 0; server 1 reads it.
        index = kv_index(servers[2].url, "greeting")
        answer: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: answer.append(httpx.get(
            f"{servers[2].url}/v1/kv/greeting", params={"index": index, "wait": "30s"}, timeout=40)))
        waiter.start()
        r = httpx.put(f"{servers[0].url}/v1/kv/greeting", content=b"hello")
        assert r.status_code == 200 and r.json() is True
        waiter.join(35)
        assert answer and answer[0].status_code == 200
        assert base64.b64decode(answer[0].json()[0]["Value"]) == b"hello"
        one = httpx.get(f"{servers[1].url}/v1/kv/greeting", params={"consistent": ""}).json()[0]
        assert one["ModifyIndex"] == answer[0].json()[0]["ModifyIndex"]  # the same index on every server
        # compare-and-set across servers: etcd decides, the stale one loses
        mod = one["ModifyIndex"]
        assert httpx.put(f"{servers[1].url}/v1/kv/greeting", params={"cas": mod}, content=b"a").json() is True
        assert httpx.put(f"{servers[2].url}/v1/kv/greeting", params={"cas": mod}, content=b"b").json() is False
    finally:
        for s in servers:
            s.stop()


def test_agent_fails_over_without_losing_a_blocking_query(etcd_cluster):
    servers = start_servers(etcd_cluster, 3)
    agent = None
    try:
        addrs = ",".join(s.addr for s in servers)
        agent = start_tether("agent", "-server-addr", addrs, "-node", "n1", "-no-managed-proxies", "-dns-port", "-1")
        r = httpx.put(f"{agent.url}/v1/agent/service/register", json={"Name": "web", "Port": 8080})
        assert r.status_code == 200, r.text
        until(lambda: all(httpx.get(f"{s.url}/v1/catalog/service/web").json() for s in servers),
              what="the service on every server")
        index = kv_index(agent.url, "k")
        answer: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: answer.append(httpx.get(
            f"{agent.url}/v1/kv/k", params={"index": index, "wait": "60s"}, timeout=70)))
        waiter.start()
        # Kill -9 every server the agent is connected to (its blocking query's among them);
        # at least one server survives.
        used = until(lambda: connected_servers(agent.proc.pid, servers), what="the agent connected")
        for i in used:
            servers[i].proc.send_signal(signal.SIGKILL)
            servers[i].proc.wait(10)
        survivor = next(s for i, s in enumerate(servers) if i not in used)
        assert waiter.is_alive()  # still blocked: it moved, it did not return early or fail
        r = httpx.put(f"{survivor.url}/v1/kv/k", content=b"after the failover")
        assert r.status_code == 200
        waiter.join(65)
        assert answer and answer[0].status_code == 200, answer and answer[0].text
        assert base64.b64decode(answer[0].json()[0]["Value"]) == b"after the failover"
        # the agent keeps working through the survivor: its own calls and forwarded ones
        r = httpx.put(f"{agent.url}/v1/agent/service/register", json={"Name": "api", "Port": 9090})
        assert r.status_code == 200, r.text
        until(lambda: httpx.get(f"{survivor.url}/v1/catalog/service/api").json(), what="api registered")
        assert httpx.get(f"{agent.url}/v1/catalog/service/web").json()[0]["ServicePort"] == 8080
    finally:
        if agent is not None:
            agent.stop()
        for s in servers:
            s.stop()


def test_unreachable_etcd_at_start_is_named_and_retried():
    import subprocess
    import sys

    from tether.testing.ports import held_port

    with held_port() as dead:  # nothing listens there: connections are refused
        proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "server", "-store",
                                 f"etcd://127.0.0.1:{dead.port}", "-http-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            for line in proc.stdout:  # bounded: the server retries until killed, logging each attempt
                lines.append(line)
                if sum(f"127.0.0.1:{dead.port}" in x and "retrying in" in x for x in lines) >= 2 or len(lines) > 50:
                    break
            assert sum(f"127.0.0.1:{dead.port}" in x and "retrying in" in x for x in lines) >= 2, "".join(lines)
            assert proc.poll() is None  # still trying, not crashed
            assert "Traceback" not in "".join(lines)
        finally:
            proc.kill()
            proc.wait()
