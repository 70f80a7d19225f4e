"""SessionService over each store backend (memory, SQLite): locks, invalidation, TTL, lock-delay.

The clock is a parameter, so a TTL passing is a step of the test's clock, not a wait."""

from __future__ import annotations

import asyncio

import pytest

from tether.control.catalog import Catalog
from tether.control.kv import KV
from tether.control.sessions import SessionService
from tether.core.errors import InvalidInput
from tether.core.session import parse_session_request
from tether.store.cached import MemoryStore
from tether.store.sqlite import SqliteStore

NODE = {"ID": "", "Node": "n1", "Address": "192.0.2.1", "Datacenter": "dc1", "TaggedAddresses": {}, "Meta": {}}


def check(check_id: str, status: str = "passing") -> dict:
    return {"Node": "n1", "CheckID": check_id, "Name": check_id, "Status": status, "Notes": "", "Output": "",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Definition": {}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
async def world(request, tmp_path):
    store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "state.db")
    catalog = Catalog(store)
    await catalog.register(NODE, [], [check("serfHealth"), check("lock-a"), check("lock-b")])
    clock = Clock()
    kv = KV(store)
    yield store, catalog, kv, SessionService(store, catalog, kv.write_lock, clock=clock), clock
    await store.close()


async def create(sessions, **body) -> str:
    return await sessions.create(parse_session_request(body, "n1"))


async def test_one_holder_at_a_time_and_lock_index(world):
    store, catalog, kv, sessions, clock = world
    a, b = await create(sessions), await create(sessions)
    assert await sessions.kv_lock("svc/leader", b"a", 0, a, acquire=True) is True
    assert await sessions.kv_lock("svc/leader", b"b", 0, b, acquire=True) is False
    assert await sessions.kv_lock("svc/leader", b"b", 0, b, acquire=False) is False  # only the holder releases
    pair = kv.get("svc/leader").value
    assert (pair["Session"], pair["LockIndex"]) == (a, 1)
    assert await kv.put("svc/leader", b"plain") is True  # a plain write keeps the lock
    assert kv.get("svc/leader").value["Session"] == a
    assert await sessions.kv_lock("svc/leader", b"", 0, a, acquire=False) is True
    assert await sessions.kv_lock("svc/leader", b"b", 0, b, acquire=True) is True
    pair = kv.get("svc/leader").value
    assert (pair["Session"], pair["LockIndex"]) == (b, 2)
    with pytest.raises(InvalidInput, match='invalid session "nope"'):
        await sessions.kv_lock("svc/leader", b"", 0, "nope", acquire=True)


async def test_a_critical_check_invalidates_and_lock_delay_holds_the_key(world):
    store, catalog, kv, sessions, clock = world
    a = await create(sessions, NodeChecks=["serfHealth", "lock-a"], LockDelay="5s")
    b = await create(sessions, NodeChecks=["serfHealth", "lock-b"])
    assert await sessions.kv_lock("svc/leader", b"a", 0, a, acquire=True)
    await catalog.update_check("n1", "lock-a", "critical", "failing")
    await sessions.sweep()
    assert sessions.get(a) is None and sessions.get(b) is not None
    assert kv.get("svc/leader").value["Session"] == ""  # Behavior release: the key stays, unlocked
    assert await sessions.kv_lock("svc/leader", b"b", 0, b, acquire=True) is False  # lock-delay
    clock.now += 5.1
    assert await sessions.kv_lock("svc/leader", b"b", 0, b, acquire=True) is True
    with pytest.raises(InvalidInput, match="Check 'lock-a' is in critical state"):
        await create(sessions, NodeChecks=["lock-a"])


async def test_behavior_delete_ttl_and_node_removal(world):
    store, catalog, kv, sessions, clock = world
    doomed = await create(sessions, Behavior="delete", TTL="10s", LockDelay="0s")
    assert await sessions.kv_lock("svc/eph", b"x", 0, doomed, acquire=True)
    clock.now += 15
    await sessions.renew(doomed)  # renewed within 2 x TTL: lives on
    clock.now += 19
    await sessions.sweep()
    assert sessions.get(doomed) is not None
    clock.now += 2
    await sessions.sweep()
    assert sessions.get(doomed) is None and kv.get("svc/eph") is None  # expired; its key deleted
    on_node = await create(sessions)
    await catalog.deregister("n1", check_id="lock-b")
    await sessions.sweep()
    assert sessions.get(on_node) is not None  # it never depended on lock-b
    await catalog.deregister("n1")
    await sessions.sweep()
    assert sessions.get(on_node) is None and sessions.list() == []
    with pytest.raises(InvalidInput, match="Missing node registration"):
        await create(sessions)


async def test_concurrent_plain_writes_all_land_and_keep_the_lock(world):
    store, catalog, kv, sessions, clock = world
    holder = await create(sessions)
    assert await sessions.kv_lock("hot", b"0", 0, holder, acquire=True)
    results = await asyncio.gather(*(kv.put("hot", str(i).encode()) for i in range(20)))
    assert all(results) and kv.get("hot").value["Session"] == holder  # none lost, none dropped the lock
