"""core/session.py: Consul's session rules as a table."""

from __future__ import annotations

import pytest

from tether.core.errors import InvalidInput
from tether.core.session import (
    check_problem, decide_acquire, decide_release, format_session, parse_session_request, session_checks,
    ttl_deadline,
)

VALUE = {"Value": "dg==", "Flags": 0}


def test_defaults_follow_consul():
    spec = parse_session_request(None, "n1")
    assert (spec.node, spec.node_checks, spec.lock_delay, spec.behavior, spec.ttl) == ("n1", ("serfHealth",), 15.0,
                                                                                        "release", 0.0)
    doc = format_session("id-1", spec)
    assert doc["LockDelay"] == 15_000_000_000 and doc["NodeChecks"] == ["serfHealth"] and doc["ServiceChecks"] is None


@pytest.mark.parametrize("body, field", [
    ({"Behavior": "keep"}, "Behavior"),
    ({"TTL": "5s"}, "Invalid Session TTL '5s'"),
    ({"TTL": "25h"}, "Invalid Session TTL"),
    ({"LockDelay": "61s"}, "LockDelay"),
    ({"NodeChecks": "serfHealth"}, "NodeChecks"),
    ({"ServiceChecks": [{"Namespace": "x"}]}, "ServiceChecks[0]"),
    ({"Nodee": "n1"}, "Nodee: unknown field"),
])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_session_request(body, "n1")


def test_lock_delay_numbers_and_lowercase_keys():
    assert parse_session_request({"lockdelay": 5}, "n1").lock_delay == 5.0  # below 1000: seconds
    assert parse_session_request({"LockDelay": 2_000_000_000}, "n1").lock_delay == 2.0  # nanoseconds
    assert parse_session_request({"LockDelay": "0s"}, "n1").lock_delay == 0.0
    spec = parse_session_request({"checks": ["a"], "ServiceChecks": [{"id": "b"}]}, "n1")
    assert session_checks(format_session("x", spec)) == ["a", "b"]  # explicit checks replace serfHealth


def test_check_problems():
    assert check_problem(["serfHealth"], {"serfHealth": "passing"}, True, "n1") is None
    assert check_problem(["serfHealth"], {"serfHealth": "warning"}, True, "n1") is None  # only critical invalidates
    assert "critical" in check_problem(["c"], {"c": "critical"}, True, "n1")
    assert "Missing check 'c'" in check_problem(["c"], {}, True, "n1")
    assert "Missing node" in check_problem([], {}, False, "n1")


def test_ttl_deadline_is_twice_the_ttl():
    assert ttl_deadline({"TTL": "10s"}, 100.0) == 120.0
    assert ttl_deadline({"TTL": ""}, 100.0) is None


@pytest.mark.parametrize("current, session, delayed, ok, lock_index", [
    (None, "s1", False, True, 1),  # free: taken
    ({**VALUE, "Session": "", "LockIndex": 3}, "s1", False, True, 4),  # released before: counts on
    ({**VALUE, "Session": "s1", "LockIndex": 4}, "s1", False, True, 4),  # the holder updates its value
    ({**VALUE, "Session": "s2", "LockIndex": 4}, "s1", False, False, None),  # held by another
    ({**VALUE, "Session": "", "LockIndex": 4}, "s1", True, False, None),  # in its lock-delay window
])
def test_acquire(current, session, delayed, ok, lock_index):
    outcome = decide_acquire(current, {"Value": "bg==", "Flags": 7}, session, delayed)
    assert outcome.ok is ok
    if lock_index is None:
        assert outcome.doc is None
    else:
        assert outcome.doc == {"Value": "bg==", "Flags": 7, "Session": session, "LockIndex": lock_index}


def test_release_only_by_the_holder():
    held = {**VALUE, "Session": "s1", "LockIndex": 2}
    assert decide_release(held, VALUE, "s2").ok is False
    assert decide_release(None, VALUE, "s1").ok is False
    released = decide_release(held, VALUE, "s1")
    assert released.ok and released.doc == {**VALUE, "Session": "", "LockIndex": 2}
