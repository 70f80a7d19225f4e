"""Singleton work is elected with an etcd lease; a lost lease fences the old leader's writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import uuid

import httpx
import pytest

from tether.store.base import Put
from tether.testing.agent import run_cli

from etcd_kit import start_servers, until

pytestmark = pytest.mark.slow  # real server processes and elections: seconds each


def _leaders(servers):
    return {httpx.get(f"{s.url}/v1/status/leader", timeout=5).json() for s in servers}


def test_one_leader_and_a_new_one_when_it_dies(etcd_cluster):
    servers = start_servers(etcd_cluster, 3, extra=("-leader-lease-ttl", "2"))
    try:
        leader = until(lambda: (lambda ls: ls.pop() if len(ls) == 1 and "" not in ls else None)(_leaders(servers)),
                       what="one leader seen by every server")
        addrs = sorted(s.addr for s in servers)
        assert leader in addrs
        assert httpx.get(f"{servers[0].url}/v1/status/peers").json() == addrs
        config = httpx.get(f"{servers[1].url}/v1/operator/raft/configuration").json()
        assert [s["Address"] for s in config["Servers"] if s["Leader"]] == [leader]
        members = config["EtcdMembers"]  # and the etcd members beneath, each asked directly
        assert len(members) == 3 and all(m["Healthy"] for m in members)
        assert sum(m["Leader"] for m in members) == 1
        peers = run_cli("operator", "raft", "list-peers", addr=servers[2].addr)
        assert peers.returncode == 0, peers.stderr
        rows = [line.split() for line in peers.stdout.splitlines()[1:] if line.strip()]
        assert sorted(r[2] for r in rows) == addrs and [r[2] for r in rows if r[3] == "leader"] == [leader]
        old = next(s for s in servers if s.addr == leader)
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(10)
        rest = [s for s in servers if s is not old]
        new = until(lambda: (lambda ls: ls.pop() if len(ls) == 1 and leader not in ls and "" not in ls else None)(
            _leaders(rest)), what="a new leader after the old one died")
        assert new in {s.addr for s in rest}
        # the dead server's lease expired with it: it is no longer a peer
        until(lambda: httpx.get(f"{rest[0].url}/v1/status/peers").json() == sorted(s.addr for s in rest),
              what="the dead server gone from the peers")
    finally:
        for s in servers:
            s.stop()


_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from tether.core.errors import Conflict
    from tether.store.base import Put
    from tether.store.etcd import open_etcd_store
    from tether.store.etcd_election import EtcdElection

    async def main():
        store = await open_etcd_store(sys.argv[1], give_up_after=10)
        election = EtcdElection(store, "paused-one", ttl=2)
        await election.start()
        while not election.is_leader:
            await asyncio.sleep(0.02)
        fence = election.fence()  # decided to write as leader ...
        print(json.dumps({"leader": election.term}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # ... paused here
        try:
            await store.commit([Put("singleton/owner", "paused-one")], fence)
            outcome = "written"
        except Conflict:
            outcome = "refused"
        while election.is_leader:  # it notices too, and steps down
            await asyncio.sleep(0.02)
        print(json.dumps({"write": outcome, "leader_now": election.leader_id()}), flush=True)
        await store.close()

    asyncio.run(main())
""")


async def test_a_paused_leader_cannot_write_after_losing_its_lease(etcd_cluster):
    from tether.store.etcd import open_etcd_store
    from tether.store.etcd_election import EtcdElection

    url = etcd_cluster.url(f"/t/{uuid.uuid4().hex}/")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    store = await open_etcd_store(url, give_up_after=10)
    other = EtcdElection(store, "other-one", ttl=2)
    try:
        first = json.loads(child.stdout.readline())
        assert first["leader"] > 0
        await other.start()
        child.send_signal(signal.SIGSTOP)  # paused past its lease
        await _until_async(lambda: other.is_leader, 20)
        assert other.leader_id() == "other-one"
        await store.commit([Put("singleton/owner", "other-one")], other.fence())  # the new leader writes
        child.send_signal(signal.SIGCONT)
        child.stdin.write("go\n")
        child.stdin.flush()
        result = json.loads(child.stdout.readline())
        assert result == {"write": "refused", "leader_now": "other-one"}
        assert store.get("singleton/owner").value == "other-one"
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait()
        await other.stop()
        await store.close()


async def _until_async(cond, timeout):
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)



async def test_the_elected_reaper_sees_heartbeats_sent_to_any_server(etcd_cluster):
    """A node heartbeats to one server; the other is elected. The leader keeps the node
    passing (it sees the heartbeats through etcd), and marks it critical once they stop."""
    from tether.control.server import ControlPlane, ServerConfig
    from tether.core.health import CRITICAL, NODE_CHECK_ID, NODE_CHECK_NAME, PASSING
    from tether.store.etcd import open_etcd_store

    url = etcd_cluster.url(f"/t/{uuid.uuid4().hex}/")
    stores = [await open_etcd_store(url, give_up_after=10) for _ in range(2)]
    config = dict(node_ttl=1.5, leader_lease_ttl=2)
    planes = [ControlPlane(s, ServerConfig(**config)) for s in stores]
    try:
        for cp in planes:
            await cp.start()
        await _until_async(lambda: any(cp.leadership.is_leader for cp in planes), 20)
        leader = next(cp for cp in planes if cp.leadership.is_leader)
        follower = next(cp for cp in planes if cp is not leader)
        check = {"Node": "n1", "CheckID": NODE_CHECK_ID, "Name": NODE_CHECK_NAME, "Status": PASSING}
        await follower.catalog.register({"Node": "n1", "Address": "127.0.0.1"}, [], [check])

        def status():
            return leader.store.get(f"catalog/nodechecks/n1/{NODE_CHECK_ID}").value["Status"]

        import asyncio

        loop = asyncio.get_running_loop()
        end = loop.time() + 3 * config["node_ttl"]  # two TTLs past the leader's grace
        while loop.time() < end:
            await follower.heartbeat("n1")  # only the follower hears from the node
            assert status() == PASSING
            await asyncio.sleep(0.2)
        await _until_async(lambda: status() == CRITICAL, 10)  # heartbeats stopped: the leader reaps
        assert not follower.leadership.is_leader
        await follower.catalog.deregister("n1")  # the node leaves: the leader drops its heartbeat record
        await _until_async(lambda: leader.store.get("heartbeat/n1") is None, 10)
    finally:
        for cp in planes:
            await cp.stop()
        for s in stores:
            await s.close()


def test_a_paused_leader_server_hands_over_and_stays_a_follower(etcd_cluster):
    """SIGSTOP the elected `tether server` past its lease: another takes the singleton
    work; resumed, the old one sees the new leader and says it stepped down."""
    servers = start_servers(etcd_cluster, 3, extra=("-leader-lease-ttl", "2"))
    paused = None
    try:
        leader = until(lambda: (lambda ls: ls.pop() if len(ls) == 1 and "" not in ls else None)(_leaders(servers)),
                       what="one leader")
        paused = next(s for s in servers if s.addr == leader)
        paused.proc.send_signal(signal.SIGSTOP)
        rest = [s for s in servers if s is not paused]
        new = until(lambda: (lambda ls: ls.pop() if len(ls) == 1 and leader not in ls and "" not in ls else None)(
            _leaders(rest)), what="a new leader while the old one is paused")
        paused.proc.send_signal(signal.SIGCONT)
        until(lambda: httpx.get(f"{paused.url}/v1/status/leader", timeout=5).json() == new,
              what="the resumed server to follow the new leader")
        until(lambda: "no longer does the singleton work" in "".join(paused.log), what="the step-down logged")
        assert _leaders(servers) == {new}
    finally:
        if paused is not None:
            paused.proc.send_signal(signal.SIGCONT)
        for s in servers:
            s.stop()
