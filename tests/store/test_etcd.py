"""What only the etcd store has: several stores (servers) on one prefix, a watch that
resumes after its member dies, and a re-list when etcd compacted past the watch.

The conformance and model-based suites (test_conformance.py, test_model.py) run on etcd
too; these tests use the same session cluster, each under a key prefix of its own.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tether.core.errors import Conflict, InvalidInput, Unavailable
from tether.core.etcd_target import parse_etcd_url
from tether.store.base import Check, Delete, Put
from tether.store.etcd import open_etcd_store
from tether.testing.agent import until_parked


def _url(cluster, members=None) -> str:
    endpoints = cluster.endpoints if members is None else ",".join(cluster.members[i].endpoint for i in members)
    return f"etcd://{endpoints}?prefix=/t/{uuid.uuid4().hex}/"


async def _until(cond, timeout=15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_two_servers_share_one_prefix(etcd_cluster):
    url = _url(etcd_cluster)
    a = await open_etcd_store(url, give_up_after=10)
    b = await open_etcd_store(url, give_up_after=10)
    try:
        waiter = asyncio.create_task(b.wait("kv/", b.index("kv/"), timeout=10))
        await until_parked(lambda: b.parked("kv/"))
        rev = await a.commit([Put("kv/x", {"from": "a"})])
        assert await asyncio.wait_for(waiter, 10) == rev  # b's blocking query woke on a's write
        assert b.get("kv/x").value == {"from": "a"} and b.get("kv/x").modify_index == rev
        # both race to create one key: etcd decides, exactly one wins
        results = await asyncio.gather(a.commit([Put("lock", "a")], [Check("lock", 0)]),
                                       b.commit([Put("lock", "b")], [Check("lock", 0)]), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "int"]
        winner = "a" if isinstance(results[0], int) else "b"
        await _until(lambda: a.get("lock") is not None and b.get("lock") is not None)
        assert a.get("lock").value == b.get("lock").value == winner
        # a check made against a stale view is refused by etcd, not by the local cache
        with pytest.raises(Conflict):
            await b.commit([Put("kv/x", 2)], [Check("kv/x", rev - 1)])
    finally:
        await a.close()
        await b.close()


async def test_watch_resumes_and_relists_after_compaction(etcd_cluster):
    """A store on member 0 only loses its member; meanwhile the others write, delete and
    compact. When member 0 returns, the watch's revision is gone: the store re-lists and
    serves exactly what etcd has, and a blocking query parked on it wakes."""
    url = _url(etcd_cluster, members=[0])
    lone = await open_etcd_store(url, give_up_after=10)
    others = await open_etcd_store(url.replace(etcd_cluster.members[0].endpoint,
                                               ",".join(m.endpoint for m in etcd_cluster.members[1:])),
                                   give_up_after=10)
    try:
        await others.commit([Put("kv/keep", 1), Put("kv/gone", 1)])
        await _until(lambda: lone.get("kv/gone") is not None)
        before = lone.index("kv/")
        waiter = asyncio.create_task(lone.wait("kv/", before, timeout=60))
        await until_parked(lambda: lone.parked("kv/"))
        etcd_cluster.kill(0)
        await others.commit([Delete("kv/gone")])
        last = await others.commit([Put("kv/new", 2), Put("kv/keep", 3)])
        etcd_cluster.compact_all()
        assert lone.get("kv/gone") is not None  # stale but served while its etcd is away
        etcd_cluster.start_member(0)
        assert await asyncio.wait_for(waiter, 30) > before
        await _until(lambda: lone.relists == 1 and lone.revision >= last)
        got = {e.key: (e.value, e.modify_index) for e in lone.list("")}
        want = {e.key: (e.value, e.modify_index) for e in others.list("")}
        assert got == want == {"kv/keep": (3, last), "kv/new": (2, last)}
        assert lone.index("kv/gone") >= last  # the delete it missed still moves the index forward
        rev = await lone.commit([Put("kv/after", 1)])  # and it writes again
        await _until(lambda: others.get("kv/after") is not None and others.get("kv/after").modify_index == rev)
    finally:
        if etcd_cluster.members[0].proc is None:
            etcd_cluster.start_member(0)
        etcd_cluster.wait_healthy()
        await lone.close()
        await others.close()


async def test_unreachable_etcd_is_retried_then_named(etcd_cluster):
    from tether.testing.ports import held_port

    with held_port() as dead:  # nothing listens on a held port: connections are refused
        with pytest.raises(Unavailable, match=f"127.0.0.1:{dead.port}"):
            await open_etcd_store(f"etcd://127.0.0.1:{dead.port}", give_up_after=1.0)


@pytest.mark.parametrize("url, why", [
    ("etcd://", "at least one host:port"),
    ("etcd://127.0.0.1", "needs host:port"),
    ("etcd://127.0.0.1:0", "port must be"),
    ("etcd://127.0.0.1:2379?prefix=/x", "must end with '/'"),
    ("etcd://127.0.0.1:2379?prefx=/x/", "unknown etcd option 'prefx'"),
    ("etcd://127.0.0.1:2379?cert=/c.pem", "both cert= and key="),
    ("etcd://127.0.0.1:2379?cert=/c&key=/k", "need ca="),
    ("etcd://[zz]:1", "not an IPv6 address"),
    ("sqlite:///x", "not an etcd URL"),
])
def test_bad_store_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(InvalidInput, match=why.replace("(", r"\(")):
        parse_etcd_url(url)


def test_store_url_parts():
    t = parse_etcd_url("etcd://127.0.0.1:2379,http://127.0.0.1:22379,[::1]:3?prefix=/a/b/&ca=/ca.pem")
    assert t.endpoints == (("127.0.0.1", 2379), ("127.0.0.1", 22379), ("::1", 3))
    assert (t.prefix, t.ca_file, t.tls) == ("/a/b/", "/ca.pem", True)
    with pytest.raises(InvalidInput, match="mix IPv4 and IPv6"):
        t.grpc_target(t.endpoints)
    assert parse_etcd_url("etcd://h:1").grpc_target((("10.0.0.1", 1),)) == "ipv4:10.0.0.1:1"


async def test_consistent_read_catches_up_even_on_an_idle_prefix(etcd_cluster):
    """`?consistent`: a quorum read learns etcd's revision; the cache is then at least there,
    even when the newest writes were under another prefix (etcd reports watch progress)."""
    mine = await open_etcd_store(_url(etcd_cluster), give_up_after=10)
    elsewhere = await open_etcd_store(_url(etcd_cluster), give_up_after=10)
    try:
        await mine.commit([Put("kv/a", 1)])
        newest = await elsewhere.commit([Put("kv/b", 2)])
        assert mine.revision < newest  # nothing under mine's prefix changed
        await mine.sync()
        assert mine.revision >= newest
    finally:
        await mine.close()
        await elsewhere.close()


async def test_tls_with_client_certificates(tmp_path):
    """`?ca=&cert=&key=`: the store talks TLS to an etcd that demands client certificates;
    without a client certificate the same etcd refuses it."""
    import trustme

    from tether.testing.deps import missing
    from tether.testing.etcd import EtcdCluster, etcd_available

    if not etcd_available():
        pytest.skip(missing("etcd"))
    ca = trustme.CA()
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "etcd.pem", "key": tmp_path / "etcd-key.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    client = {"ca": files["ca"], "cert": tmp_path / "client.pem", "key": tmp_path / "client-key.pem"}
    issued = ca.issue_cert("tether-server")
    issued.cert_chain_pems[0].write_to_path(client["cert"])
    issued.private_key_pem.write_to_path(client["key"])
    cluster = EtcdCluster(tmp_path / "etcd", size=1, tls=files).start()
    try:
        store = await open_etcd_store(cluster.url("/tls/", client=client), give_up_after=10)
        try:
            rev = await store.commit([Put("kv/a", "over TLS")])
            assert store.get("kv/a").modify_index == rev
        finally:
            await store.close()
        assert "/tls/kv/a" in cluster.ctl("get", "--prefix", "/tls/").stdout
        with pytest.raises(Unavailable):  # CA only, no client certificate: etcd refuses the handshake
            await open_etcd_store(cluster.url("/tls/", client={"ca": files["ca"]}), give_up_after=1.5)
    finally:
        cluster.stop()
