"""Validity-window math: renewal jitter bounds, expiry, root pruning, TTL bounds."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.certwindow import (
    is_current,
    is_due,
    is_expired,
    RETRY_MAX_SECONDS,
    RETRY_MIN_SECONDS,
    renewal_point,
    retry_delay,
    root_prunable,
    validate_leaf_ttl,
)
from tether.core.errors import InvalidInput

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)

issued = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC))
ttls = st.integers(min_value=60, max_value=365 * 24 * 3600)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
fractions = st.floats(min_value=0.0, max_value=1.5)


@given(t=issued, d=ttls, u=draws, f=fractions)
def test_never_due_before_60_percent_always_due_after_90(t, d, u, f):
    before = t + dt.timedelta(seconds=d)
    renew_at = renewal_point(t, before, u)
    now = t + dt.timedelta(seconds=d * f)
    lifetime = before - t
    if now < t + lifetime * 0.6:
        assert not is_due(now, t, before, renew_at)
    if now > t + lifetime * 0.9:
        assert is_due(now, t, before, renew_at)


@given(t=issued, d=ttls, f=fractions, skew=st.integers(min_value=-10**9, max_value=10**9))
def test_any_renew_at_is_clamped_into_the_window(t, d, f, skew):
    before = t + dt.timedelta(seconds=d)
    now = t + dt.timedelta(seconds=d * f)
    renew_at = t + dt.timedelta(seconds=skew)
    lifetime = before - t
    if now < t + lifetime * 0.6:
        assert not is_due(now, t, before, renew_at)
    if now >= t + lifetime * 0.9:
        assert is_due(now, t, before, renew_at)


def test_renewal_point_spans_60_to_90_percent():
    before = T0 + dt.timedelta(hours=100)
    assert renewal_point(T0, before, 0.0) == T0 + dt.timedelta(hours=60)
    assert renewal_point(T0, before, 0.5) == T0 + dt.timedelta(hours=75)
    assert renewal_point(T0, before, 0.999999) < T0 + dt.timedelta(hours=90)
    assert is_due(T0 + dt.timedelta(hours=60), T0, before, None)


@pytest.mark.parametrize("u", [-0.1, 1.0, float("nan")])
def test_renewal_draw_out_of_range(u):
    with pytest.raises(InvalidInput, match="u="):
        renewal_point(T0, T0 + dt.timedelta(hours=1), u)


def test_naive_and_empty_windows_are_refused():
    with pytest.raises(InvalidInput, match="timezone-aware"):
        is_due(dt.datetime(2030, 1, 1), T0, T0 + dt.timedelta(hours=1), None)
    with pytest.raises(InvalidInput, match="empty"):
        renewal_point(T0, T0, 0.5)


def test_expiry_and_current():
    before = T0 + dt.timedelta(hours=1)
    assert not is_expired(before - dt.timedelta(seconds=1), before)
    assert is_expired(before, before)
    assert is_current(T0, T0, before) and not is_current(before, T0, before)
    assert not is_current(T0 - dt.timedelta(seconds=1), T0, before)


def test_root_prunable_after_twice_the_leaf_ttl():
    ttl = 72 * 3600
    assert not root_prunable(T0 + dt.timedelta(days=999), None, ttl)  # still active
    assert not root_prunable(T0 + dt.timedelta(hours=144), T0, ttl)
    assert root_prunable(T0 + dt.timedelta(hours=144, seconds=1), T0, ttl)


@pytest.mark.parametrize("seconds", [60, 60.0, 72 * 3600, 365 * 24 * 3600])
def test_leaf_ttl_in_range(seconds):
    assert validate_leaf_ttl(seconds) == float(seconds)


@pytest.mark.parametrize("seconds", [59.9, 0, -60, 365 * 24 * 3600 + 1, float("nan"), float("inf"), True, "72h"])
def test_leaf_ttl_out_of_range(seconds):
    with pytest.raises(InvalidInput, match="LeafCertTTL"):
        validate_leaf_ttl(seconds)


@pytest.mark.parametrize("failures, remaining, retry_after, u, expected", [
    (1, 0, None, 0.5, 0.25), (2, 0, None, 0.5, 0.5), (8, 0, None, 0.5, 30.0), (100, 0, None, 0.5, 30.0),
    (8, 40, None, 0.5, 10.0),  # a quarter of what is left
    (3, 0.1, None, 0.5, 0.25),  # never below the first step
    (1, 0, 4.0, 0.0, 2.0), (1, 0, 4.0, 0.5, 4.0), (1, 0, 0.1, 0.5, 0.25),
    (1, 40, 60.0, 0.5, 10.0),  # Retry-After past a quarter of what is left: the leaf comes first
])
def test_retry_delay_table(failures, remaining, retry_after, u, expected):
    assert retry_delay(failures, remaining, retry_after=retry_after, u=u) == pytest.approx(expected)


@given(st.integers(1, 1000), st.floats(0, 1e6), st.floats(0, 0.999))
def test_retry_delay_stays_in_bounds(failures, remaining, u):
    delay = retry_delay(failures, remaining, u=u)
    assert RETRY_MIN_SECONDS <= delay <= RETRY_MAX_SECONDS
    if remaining > 4 * RETRY_MIN_SECONDS:
        assert delay <= remaining / 4
    assert retry_delay(failures + 1, remaining, u=u) >= delay  # never shorter after another failure
