"""Load balancing and outlier detection, as plain bookkeeping (no sockets, explicit time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.proxy.pool import LEAST_CONN, ROUND_ROBIN, Instance, Pool

A, B, C = (Instance("192.0.2.1", p) for p in (1, 2, 3))


def addrs(members):
    return [m.instance.port for m in members]


def test_round_robin_cycles():
    pool = Pool([A, B, C])
    assert addrs(pool.pick(0) for _ in range(7)) == [1, 2, 3, 1, 2, 3, 1]


def test_least_conn_prefers_the_idlest_and_spreads_ties():
    pool = Pool([A, B, C], LEAST_CONN)
    a = pool.members[0]
    pool.connect_ok(a)
    pool.connect_ok(a)
    picks = addrs(pool.pick(0) for _ in range(4))
    assert 1 not in picks and set(picks) == {2, 3}


def test_ejection_after_consecutive_failures_with_doubling_backoff():
    pool = Pool([A, B], eject_after=2, eject_base=10, eject_max=25)
    a = pool.members[0]
    assert not pool.connect_failed(a, now=0)
    assert pool.connect_failed(a, now=0)  # second in a row: ejected for 10 s
    assert addrs(pool.pick(5) for _ in range(3)) == [2, 2, 2]
    assert 1 in addrs(pool.pick(10) for _ in range(2))  # back after the period
    pool.connect_failed(a, now=10)
    assert pool.connect_failed(a, now=10)  # ejected again: 20 s this time
    assert not a.healthy(29) and a.healthy(30)
    pool.connect_failed(a, now=30)
    pool.connect_failed(a, now=30)  # third time: capped at 25 s
    assert a.ejected_until == 55
    pool.connect_ok(a)  # a success forgives everything
    assert a.healthy(30) and a.failures == 0 and a.ejections == 0


def test_success_resets_the_consecutive_count():
    pool = Pool([A], eject_after=3)
    a = pool.members[0]
    pool.connect_failed(a, 0)
    pool.connect_failed(a, 0)
    pool.connect_ok(a)
    assert not pool.connect_failed(a, 0)


def test_panic_mode_when_everything_is_ejected():
    pool = Pool([A, B, C], eject_after=1)
    a = pool.members[0]
    pool.connect_failed(a, 0)
    assert a not in [pool.pick(1) for _ in range(6)]  # one ejected: the others share the load
    for m in pool.members[1:]:
        pool.connect_failed(m, 0)
    # Every instance ejected: panic, and all of them are tried again in turn.
    assert {m.instance for m in (pool.pick(1) for _ in range(6))} == {A, B, C}


def test_exclude_and_exhaustion():
    pool = Pool([A, B])
    first = pool.pick(0)
    second = pool.pick(0, [first])
    assert second is not first
    assert pool.pick(0, [first, second]) is None
    assert Pool([]).pick(0) is None


def test_update_keeps_state_of_instances_that_stay():
    pool = Pool([A, B])
    a = pool.members[0]
    pool.connect_ok(a)
    pool.update([C, A])
    assert addrs(pool.members) == [3, 1] and pool.members[1] is a and a.active == 1


def test_bad_policy():
    with pytest.raises(ValueError, match="least_conn"):
        Pool([A], "random")


@given(st.lists(st.integers(1, 6), min_size=1, max_size=6, unique=True), st.sampled_from([ROUND_ROBIN, LEAST_CONN]),
       st.lists(st.tuples(st.sampled_from(["pick", "ok", "fail", "release"]), st.integers(0, 5)), max_size=40))
def test_picks_are_members_and_never_excluded(ports, policy, ops):
    pool = Pool([Instance("192.0.2.9", p) for p in ports], policy, eject_after=2)
    now = 0.0
    for op, i in ops:
        now += 1
        m = pool.members[i % len(pool.members)]
        if op == "ok":
            pool.connect_ok(m)
        elif op == "fail":
            pool.connect_failed(m, now)
        elif op == "release":
            pool.released(m)
        else:
            picked = pool.pick(now, [m])
            assert picked is None or (picked in pool.members and picked is not m)
        assert all(x.active >= 0 for x in pool.members)
