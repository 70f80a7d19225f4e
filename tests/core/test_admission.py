"""Pending handshakes and shedding under pressure (core/admission.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.admission import PendingHandshakes


def gate(cap=3, silent=0.25, talking=5.0) -> PendingHandshakes:
    return PendingHandshakes(cap, silent_timeout=silent, handshake_timeout=talking)


def test_below_the_cap_nothing_is_shed_however_old():
    p = gate()
    p.add("a", 0.0)
    p.add("b", 0.0)
    assert not p.full and p.shed(1e9) == [] and p.next_shed_at() is None


def test_at_the_cap_silent_ones_go_first_and_talking_ones_later():
    p = gate()
    p.add("idle", 0.0)
    p.add("client", 0.0)
    p.heard("client")
    p.add("late", 0.2)
    assert p.full and p.next_shed_at() == 0.25
    assert p.shed(0.24) == []
    assert p.shed(0.25) == [("idle", True)]  # room again: the listener resumes
    assert not p.full and "client" in p and "late" in p


def test_talking_handshakes_get_the_longer_deadline():
    p = gate(cap=2)
    for key in ("x", "y"):
        p.add(key, 0.0)
        p.heard(key)
    assert p.next_shed_at() == 5.0
    assert p.shed(4.9) == []
    assert p.shed(5.0) == [("x", False), ("y", False)]


def test_a_silent_one_whose_bytes_are_waiting_is_kept():
    p = gate(cap=2)
    p.add("spoke", 0.0)
    p.add("idle", 0.0)
    assert p.shed(1.0, spoke=lambda key: key == "spoke") == [("idle", True)]
    assert "spoke" in p  # now talking: shed only after 5 s
    assert p.shed(1.0) == []


def test_done_makes_room():
    p = gate(cap=1)
    p.add("a", 0.0)
    assert p.full
    assert p.remove("a") is True and p.remove("a") is False and not p.full


def test_the_cap_is_at_least_one():
    with pytest.raises(ValueError):
        PendingHandshakes(0)


events = st.lists(st.tuples(st.sampled_from(["add", "heard", "remove", "shed"]), st.integers(0, 9),
                            st.floats(0, 0.5)), max_size=60)


@given(events, st.integers(1, 6))
def test_shedding_keeps_every_rule(steps, cap):
    """Whatever happens: shed only at the cap, only what is past its deadline, each key once,
    and no silent connection past its deadline survives a shed at the cap."""
    p = gate(cap=cap)
    now, started, talking = 0.0, {}, set()
    for op, key, dt in steps:
        now += dt
        if op == "add" and key not in p:
            p.add(key, now)
            started[key] = now
            talking.discard(key)
        elif op == "heard":
            if key in p:
                talking.add(key)
            p.heard(key)
        elif op == "remove":
            p.remove(key)
        elif op == "shed":
            was_full = p.full
            out = p.shed(now)
            assert was_full or out == []
            for k, silent in out:
                assert silent == (k not in talking)
                assert now - started[k] >= (0.25 if silent else 5.0)
                assert k not in p
            assert len({k for k, _ in out}) == len(out)
            if was_full:  # silent ones are kept in accept order: none past its deadline is left
                assert all(now - started[k] < 0.25 for k in started if k in p and k not in talking)
