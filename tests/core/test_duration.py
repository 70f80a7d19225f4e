"""Go durations: the strings Go prints, parsed back exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.duration import (
    MAX_NANOSECONDS,
    format_duration,
    format_duration_ns,
    parse_duration,
    parse_duration_ns,
)
from tether.core.errors import InvalidInput

# What Go's time.Duration.String() prints for these values.
GO_STRINGS = [
    (0, "0s"),
    (1, "1ns"),
    (1_100, "1.1µs"),
    (2_200_000, "2.2ms"),
    (3_300_000_000, "3.3s"),
    (60_000_000_000, "1m0s"),
    (4 * 60_000_000_000 + 5_000_000_000, "4m5s"),
    (5_400_000_000_000, "1h30m0s"),
    (72 * 3_600_000_000_000, "72h0m0s"),
    (8760 * 3_600_000_000_000, "8760h0m0s"),
    (-1_500_000_000, "-1.5s"),
    (MAX_NANOSECONDS, "2562047h47m16.854775807s"),
]


@pytest.mark.parametrize("ns, text", GO_STRINGS)
def test_format_matches_go(ns, text):
    assert format_duration_ns(ns) == text
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("72h", 259200.0), ("30s", 30.0), ("1h30m", 5400.0), ("10m", 600.0), ("0", 0.0),
        ("1.5h", 5400.0), (".5s", 0.5), ("1.s", 1.0), ("500ms", 0.5), ("10us", 1e-5), ("10µs", 1e-5),
        ("+5s", 5.0), ("-5s", -5.0), ("1h1h", 7200.0),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "h", "1x", "1 h", "1h 30m", "-", ".s", "1e3s", "9999999999h", None, 5])
def test_parse_refusals_name_the_field(text):
    with pytest.raises(InvalidInput, match="LeafCertTTL"):
        parse_duration(text, field="LeafCertTTL")


def test_format_seconds():
    assert format_duration(72 * 3600) == "72h0m0s"
    assert format_duration(0.25) == "250ms"


@given(st.integers(min_value=-MAX_NANOSECONDS, max_value=MAX_NANOSECONDS))
def test_ns_round_trip(ns):
    assert parse_duration_ns(format_duration_ns(ns)) == ns


@given(st.text(max_size=20))
def test_parse_raises_only_invalid_input(text):
    try:
        parse_duration_ns(text)
    except InvalidInput:
        pass
