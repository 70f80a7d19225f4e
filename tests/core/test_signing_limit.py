"""The CA's signing limit (core/signing_limit.py): renewals first, a fair share per token."""

from __future__ import annotations

from tether.core.signing_limit import ACTIVE_WINDOW, FairLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(limit: FairLimiter, requester: str, *, renewal: bool = False, most: int = 1000) -> int:
    """How many requests `requester` gets through right now."""
    taken = 0
    while taken < most and limit.take(requester, renewal=renewal) == 0.0:
        taken += 1
    return taken


def test_the_bucket_is_the_ceiling_and_refills_at_the_rate():
    clock = Clock()
    limit = FairLimiter(10, clock)
    assert drain(limit, "a", renewal=True) == 10
    assert limit.take("a", renewal=True) > 0
    clock.now += 0.5
    assert drain(limit, "a", renewal=True) == 5


def test_new_identities_leave_a_fifth_of_the_bucket_to_renewals():
    limit = FairLimiter(50, Clock())
    assert drain(limit, "flood") == 40  # new identities stop at the reserve ...
    wait = limit.take("flood", renewal=False)
    assert wait > 0
    assert drain(limit, "service", renewal=True) == 10  # ... which renewals may use


def test_a_tiny_rate_reserves_nothing_so_the_first_request_passes():
    limit = FairLimiter(0.1, Clock())
    assert limit.take("a", renewal=False) == 0.0
    assert limit.take("a", renewal=False) > 0


def test_under_pressure_each_requester_gets_its_share():
    clock = Clock()
    limit = FairLimiter(20, clock)
    limit.take("quiet", renewal=False)  # a second requester is active
    assert drain(limit, "greedy") < 15  # cannot take what the quiet one is owed
    clock.now += 1.0  # one second of refill: both may use their share
    assert drain(limit, "quiet") >= 5


def test_a_lone_requester_is_not_throttled_below_the_rate():
    clock = Clock()
    limit = FairLimiter(20, clock)
    taken = 0
    for _ in range(10):  # ten seconds, one requester
        taken += drain(limit, "alone", renewal=True)
        clock.now += 1.0
    assert taken >= 20 * 10 - 1


def test_requesters_gone_quiet_stop_counting():
    clock = Clock()
    limit = FairLimiter(20, clock)
    for i in range(70):
        limit.take(f"old{i}", renewal=True)
    clock.now += ACTIVE_WINDOW + 60  # all of them quiet for longer than the window
    assert drain(limit, "new", renewal=True) == 20  # the whole bucket, not 1/71 of it


def test_rate_zero_means_unlimited():
    limit = FairLimiter(0, Clock())
    assert drain(limit, "a", most=500) == 500
