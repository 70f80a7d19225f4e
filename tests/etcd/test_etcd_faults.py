"""etcd faults with a Tether server on top, each asserted from recorded data (slow).

Each test has its own 3-member etcd (these tests kill members) and a real
`tether server -store etcd://...`. A writer records every acknowledged write; a
blocking-query watcher records every change it saw; at the end both are compared with
what etcd itself holds (read with etcdctl, not through Tether).
"""

from __future__ import annotations

import base64
import threading

import httpx
import pytest

from tether.testing.agent import start_tether
from tether.testing.deps import missing
from tether.testing.etcd import EtcdCluster, KvWriter as Writer, etcd_available

from etcd_kit import until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not etcd_available(), reason=missing("etcd"))]
PREFIX = "/faults/"


@pytest.fixture
def cluster(tmp_path):
    c = EtcdCluster(tmp_path / "etcd").start()
    yield c
    c.stop()


class Watcher(threading.Thread):
    """Blocking queries on w/ (recurse), recording every key it was shown."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        index = 0
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.get("/v1/kv/w/", params={"recurse": "1", "index": index, "wait": "2s"})
                except httpx.HTTPError:
                    self.errors += 1
                    continue
                if r.status_code == 200:
                    self.seen |= {e["Key"] for e in r.json()}
                    index = int(r.headers["X-Consul-Index"])
                elif r.status_code != 404:
                    self.errors += 1


def _stored(cluster) -> set[int]:
    out = cluster.ctl("get", "--prefix", "--keys-only", f"{PREFIX}kv/w/", timeout=20)
    assert out.returncode == 0, out.stderr
    return {int(line.rsplit("/", 1)[1]) for line in out.stdout.split() if line}


def test_etcd_leader_then_follower_killed_under_writes(cluster):
    server = start_tether("server", "-store", cluster.url(PREFIX))
    writer, watcher = Writer(server.url), Watcher(server.url)
    try:
        watcher.start()
        writer.start()
        for victim in ("leader", "follower"):
            until(lambda n=len(writer.acked): len(writer.acked) >= n + 30, what="writes flowing")
            leader = cluster.leader()
            i = leader if victim == "leader" else next(j for j in range(3) if j != leader)
            cluster.kill(i)
            mark = len(writer.acked)
            until(lambda: len(writer.acked) >= mark + 30, timeout=30, what=f"writes after the {victim} died")
            cluster.start_member(i)
            cluster.wait_healthy()
        writer.stop.set()
        writer.join(30)
        acked = set(writer.acked)
        assert acked <= _stored(cluster)  # nothing acknowledged was lost
        # every failure was a clear 503 (the election), never a hang or a 500
        assert all(code == 503 for _, code, _ in writer.failed), writer.failed[:3]
        # the blocking queries missed nothing: every acknowledged key was shown to the watcher
        until(lambda: {f"w/{i}" for i in acked} <= watcher.seen, timeout=20, what="the watcher saw every write")
    finally:
        writer.stop.set()
        watcher.stop.set()
        server.stop()


def test_quorum_lost_writes_fail_fast_stale_reads_work(cluster):
    server = start_tether("server", "-store", cluster.url(PREFIX))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as api:  # a write that hangs fails the test
            assert api.put("/v1/kv/before", content=b"kept").json() is True
            assert api.get("/v1/kv/before").headers["X-Consul-KnownLeader"] == "true"
            survivor = cluster.leader()
            for i in range(3):
                if i != survivor:
                    cluster.kill(i)
            r = api.put("/v1/kv/during", content=b"x")
            assert r.status_code == 503
            assert "no leader" in r.text and "quorum" in r.text, r.text
            # etcd may commit a proposal it held once quorum returns: the answer says so, honestly
            assert "may still apply it" in r.text
            read = api.get("/v1/kv/before", params={"stale": ""})
            assert read.status_code == 200 and base64.b64decode(read.json()[0]["Value"]) == b"kept"
            assert read.headers["X-Consul-KnownLeader"] == "false"
            # one member back: quorum again, writes and the header recover
            cluster.start_member(next(i for i in range(3) if i != survivor))
            until(lambda: api.put("/v1/kv/after", content=b"y").status_code == 200, timeout=30,
                  what="writes after quorum returned")
            assert api.get("/v1/kv/after").headers["X-Consul-KnownLeader"] == "true"
            assert base64.b64decode(api.get("/v1/kv/before").json()[0]["Value"]) == b"kept"
    finally:
        server.stop()
