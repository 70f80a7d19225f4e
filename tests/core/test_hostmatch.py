"""Host-name validation and wildcard matching (core/hostmatch.py): tables from Istio's
semantics plus hypothesis properties for the index and most-specific selection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import InvalidInput
from tether.core.hostmatch import (
    HostIndex,
    host_problem,
    host_specificity,
    match_host,
    match_most_specific,
    normalize_runtime_name,
    parse_dns_name,
    parse_host_pattern,
)


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("foo.com", "foo.com", True),
    ("foo.com", "bar.com", False),
    ("bar.foo.com", "foo.com", False),
    ("foo.com", "bar.foo.com", False),
    ("*.com", "foo.com", True),
    ("*.foo.com", "bar.foo.com", True),
    ("*.foo.com", "a.b.foo.com", True),  # one OR MORE labels, as Istio's suffix match
    ("*.foo.com", "foo.com", False),  # never the bare domain
    ("*.foo.com", "xfoo.com", False),  # the suffix starts at a label boundary
    ("*.foo.bar.baz", "baz", False),
    ("*.baz", "foo.bar.baz", True),
    ("*", "anything.example", True),
    ("*.foo.com", ".foo.com", False),
    ("*.foo.com", "a..foo.com", False),
])
def test_match_host_follows_istio(pattern: str, name: str, expected: bool) -> None:
    assert match_host(pattern, name) is expected


@pytest.mark.parametrize("value", [
    "example.com", "*.example.com", "*.com", "a-b.c-d.example", "EXAMPLE.com", "x" * 63 + ".com", "localhost",
])
def test_valid_host_patterns(value: str) -> None:
    assert host_problem(value) is None
    assert parse_host_pattern(value) == value.lower()


@pytest.mark.parametrize(("value", "says"), [
    ("*", "'*' is not allowed"),
    ("", "empty"),
    ("example.com.", "must not end with '.'"),
    ("*foo.example.com", "whole left-most label"),
    ("foo.*.example.com", "whole left-most label"),
    ("-bad.example.com", "not a valid DNS label"),
    ("under_score.example.com", "not a valid DNS label"),
    ("a..example.com", "not a valid DNS label"),
    ("x" * 64 + ".com", "not a valid DNS label"),
    ("a." * 127 + "com", "longer than 253"),
    ("203.0.113.7", "looks like an IP address"),
    (42, "must be a string"),
])
def test_invalid_host_patterns_say_why(value: object, says: str) -> None:
    problem = host_problem(value)
    assert problem is not None and says in problem
    with pytest.raises(InvalidInput, match="host"):
        parse_host_pattern(value)


def test_bare_star_only_where_asked_for_and_exact_names_refuse_wildcards() -> None:
    assert parse_host_pattern("*", allow_any=True) == "*"
    with pytest.raises(InvalidInput, match="exact DNS name"):
        parse_dns_name("*.example.com")


@pytest.mark.parametrize(("raw", "expected"), [
    ("API.Example.COM", "api.example.com"),
    ("api.example.com.", "api.example.com"),
    ("_acme.example.com", "_acme.example.com"),
    ("", None), ("a..b", None), ("bad host", None), ("x" * 300, None), ("café.example", None),
])
def test_normalize_runtime_name(raw: str, expected: str | None) -> None:
    assert normalize_runtime_name(raw) == expected


def test_most_specific_exact_beats_wildcard_and_longer_suffix_beats_shorter() -> None:
    patterns = ["*.com", "*.example.com", "*.api.example.com", "v1.api.example.com"]
    assert match_most_specific(patterns, "v1.api.example.com") == "v1.api.example.com"
    assert match_most_specific(patterns, "v2.api.example.com") == "*.api.example.com"
    assert match_most_specific(patterns, "www.example.com") == "*.example.com"
    assert match_most_specific(patterns, "other.com") == "*.com"
    assert match_most_specific(patterns, "example.org") is None
    assert host_specificity("a.example.com") > host_specificity("*.example.com") > host_specificity("*.com")


def test_index_keeps_every_value_of_a_pattern_in_order() -> None:
    index = HostIndex([("*.example.com", 1), ("api.example.com", 2), ("*.example.com", 3)])
    assert index.lookup("api.example.com") == ("api.example.com", (2,))
    assert index.lookup("x.y.example.com") == ("*.example.com", (1, 3))
    assert index.lookup("example.com") is None
    assert len(index) == 2
    assert HostIndex([("*", "any")]).lookup("whatever") == ("*", ("any",))


# Small alphabets so generated patterns and names actually collide.
_labels = st.sampled_from(["a", "b", "c", "api", "example", "com"])
_names = st.lists(_labels, min_size=1, max_size=4).map(".".join)
_patterns = st.one_of(_names, _names.map(lambda n: "*." + n))


@given(st.lists(_patterns, max_size=8), _names)
def test_index_lookup_agrees_with_brute_force(patterns: list[str], name: str) -> None:
    found = HostIndex((p, p) for p in patterns).lookup(name)
    expected = match_most_specific(patterns, name)
    assert (found[0] if found else None) == expected


@given(st.lists(_patterns, max_size=8), _names, st.randoms(use_true_random=False))
def test_order_of_patterns_never_changes_the_winner(patterns: list[str], name: str, rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = patterns[:]
    rnd.shuffle(shuffled)
    assert match_most_specific(patterns, name) == match_most_specific(shuffled, name)


@given(_patterns, _names)
def test_wildcard_matches_exactly_the_names_with_a_label_in_front(pattern: str, name: str) -> None:
    if pattern.startswith("*."):
        suffix = pattern[2:].split(".")
        labels = name.split(".")
        expected = len(labels) > len(suffix) and labels[-len(suffix):] == suffix
    else:
        expected = pattern == name
    assert match_host(pattern, name) is expected


@given(st.text(max_size=40))
def test_host_problem_never_raises(value: str) -> None:
    host_problem(value)
    normalize_runtime_name(value)
