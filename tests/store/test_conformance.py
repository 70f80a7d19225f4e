"""One conformance suite for every Store backend (memory, SQLite, etcd).

Revisions are asserted relative to the store's revision at the start: an etcd store's
index is etcd's revision, which has moved already (each test here has a key prefix of its
own on the store suites' cluster, tests/store/conftest.py, where nothing else writes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from tether.core.errors import Conflict
from tether.store.base import Check, Delete, DeletePrefix, Put
from tether.store.cached import MemoryStore
from tether.store.etcd import EtcdStore, open_etcd_store
from tether.store.sqlite import SqliteStore
from tether.testing.agent import until_parked


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request, tmp_path):
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_store_cluster")
        s = await open_etcd_store(cluster.url(f"/t/{uuid.uuid4().hex}/"), give_up_after=10)
    else:
        s = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "state.db")
    yield s
    await s.close()


async def test_empty_store(store):
    if not isinstance(store, EtcdStore):  # etcd's revision is the cluster's, not the prefix's
        assert store.revision == 0
    assert store.get("a") is None
    assert store.list("") == []
    assert store.index("") == 1  # never below 1, as Consul clients expect


async def test_put_get_list_revisions(store):
    r0 = store.revision
    r1 = await store.commit([Put("kv/a", {"v": 1})])
    r2 = await store.commit([Put("kv/b", {"v": 2}), Put("cat/x", [1, 2])])
    assert (r1, r2) == (r0 + 1, r0 + 2)
    a = store.get("kv/a")
    assert (a.value, a.create_index, a.modify_index) == ({"v": 1}, r1, r1)
    r3 = await store.commit([Put("kv/a", {"v": 3})])
    a = store.get("kv/a")
    assert (a.value, a.create_index, a.modify_index) == ({"v": 3}, r1, r3)
    assert [e.key for e in store.list("kv/")] == ["kv/a", "kv/b"]
    assert [e.key for e in store.list("")] == ["cat/x", "kv/a", "kv/b"]
    assert store.revision == r0 + 3


async def test_index_tracks_deletes_per_prefix(store):
    r1 = await store.commit([Put("kv/a", 1)])
    r2 = await store.commit([Put("cat/x", 1)])
    assert store.index("kv/") == r1 and store.index("cat/") == r2
    rev = await store.commit([Delete("kv/a")])
    assert store.get("kv/a") is None
    assert store.index("kv/") == rev  # a delete moves the index forward
    assert store.index("kv/a") == rev  # exact key too (tombstone)
    assert store.index("cat/") == r2  # untouched prefix keeps its index
    assert store.index(["kv/", "cat/"]) == rev


async def test_non_directory_prefix_index(store):
    await store.commit([Put("kv/foo1", 1), Put("kv/bar", 1)])
    r = await store.commit([Put("kv/foo2", 2)])
    await store.commit([Put("kv/bar", 3)])
    assert store.index("kv/foo") == r


async def test_cas_create_only_and_modify(store):
    await store.commit([Put("k", 1)], [Check("k", 0)])
    with pytest.raises(Conflict):
        await store.commit([Put("k", 2)], [Check("k", 0)])
    e = store.get("k")
    await store.commit([Put("k", 2)], [Check("k", e.modify_index)])
    with pytest.raises(Conflict):
        await store.commit([Put("k", 3)], [Check("k", e.modify_index)])
    assert store.get("k").value == 2


async def test_failed_check_writes_nothing(store):
    await store.commit([Put("a", 1)])
    before = store.revision
    with pytest.raises(Conflict):
        await store.commit([Put("a", 2), Put("b", 2)], [Check("a", 0)])
    assert store.revision == before
    assert store.get("a").value == 1 and store.get("b") is None


async def test_delete_prefix_and_noop(store):
    await store.commit([Put("kv/d/1", 1), Put("kv/d/2", 2), Put("kv/e", 3)])
    rev = store.revision
    assert await store.commit([Delete("missing")]) == rev  # nothing changed, no new revision
    await store.commit([DeletePrefix("kv/d/")])
    assert [e.key for e in store.list("kv/")] == ["kv/e"]


async def test_transaction_is_atomic_and_later_ops_win(store):
    rev = await store.commit([Put("x", 1), Delete("x"), Put("y", 1), Put("y", 2)])
    assert store.get("x") is None and store.get("y").value == 2
    assert store.get("y").modify_index == rev


async def test_wait_returns_at_once_when_index_differs(store):
    r1 = await store.commit([Put("kv/a", 1)])
    assert await store.wait("kv/", 0, timeout=10) == r1


async def test_wait_wakes_on_relevant_change_only(store):
    await store.commit([Put("kv/a", 1), Put("cat/a", 1)])
    idx = store.index("cat/")
    waiter = asyncio.create_task(store.wait("cat/", idx, timeout=10))
    await until_parked(lambda: store.parked("cat/"))
    assert store.parked() == 1 and store.parked("kv/") == 0
    await store.commit([Put("kv/b", 2)])  # irrelevant: must not wake the catalog waiter
    assert store.parked("cat/") == 1  # a woken waiter's future is done at once: it would count 0
    rev = await store.commit([Put("cat/b", 2)])
    assert await asyncio.wait_for(waiter, 1) == rev
    assert store.parked() == 0  # nothing left behind


async def test_wait_blocks_until_the_change(store):
    """A waiter parks, and the write is what ends the wait (not the timeout, not at once)."""
    await store.commit([Put("kv/a", 1)])
    waiter = asyncio.create_task(store.wait("kv/a", store.index("kv/a"), timeout=30))
    await until_parked(lambda: store.parked("kv/a"))
    assert not waiter.done()
    rev = await store.commit([Put("kv/a", 2)])
    assert await asyncio.wait_for(waiter, 10) == rev


async def test_wait_times_out_with_same_index(store):
    r1 = await store.commit([Put("kv/a", 1)])
    assert await store.wait("kv/", r1, timeout=0.05) == r1


async def test_many_waiters_all_wake(store):
    r1 = await store.commit([Put("kv/a", 1)])
    waiters = [asyncio.create_task(store.wait(["kv/", "x/"], r1, timeout=10)) for _ in range(200)]
    await until_parked(lambda: store.parked(), more_than=199)
    assert store.parked("kv/") == store.parked("x/") == 200
    rev = await store.commit([Put("kv/z", 1)])
    assert set(await asyncio.wait_for(asyncio.gather(*waiters), 2)) == {rev}


async def test_sqlite_survives_reopen_with_tombstones(tmp_path):
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    await s.commit([Put("kv/a", {"x": 1}), Put("kv/b", 2)])
    deleted_at = await s.commit([Delete("kv/b")])
    await s.close()
    s = SqliteStore(path)
    assert s.revision == deleted_at
    assert s.get("kv/a").value == {"x": 1} and s.get("kv/b") is None
    assert s.index("kv/") == deleted_at
    assert await s.commit([Put("kv/c", 3)]) == deleted_at + 1
    await s.close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_sqlite_acknowledged_writes_survive_kill_9(tmp_path):
    """A child process acknowledges writes on stdout, then is killed with SIGKILL."""
    path = tmp_path / "state.db"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import asyncio, sys
            from tether.store.base import Put
            from tether.store.sqlite import SqliteStore
from tether.testing.agent import until_parked
            async def main():
                s = SqliteStore({str(path)!r})
                for i in range(200):
                    await s.commit([Put(f"kv/{{i}}", i)])
                    print(i, flush=True)
                await asyncio.sleep(60)
            asyncio.run(main())
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    acked = -1
    for line in child.stdout:
        acked = int(line)
        if acked == 100:  # kill mid-stream, while writes are still going on
            break
    child.kill()
    child.wait()
    s = SqliteStore(path)
    values = [e.value for e in s.list("kv/")]
    assert set(range(acked + 1)) <= set(values)  # every acknowledged write is there
