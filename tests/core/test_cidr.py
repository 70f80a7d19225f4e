"""CIDR matching with `except`: tables for parsing, hypothesis for agreement with `ipaddress`."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.cidr import NetworkMatch, NetworkSet, match_network, parse_ip, parse_network, parse_network_match
from tether.core.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"),  # a bare address is a host route
        ("2001:db8::/32", "2001:db8::/32"),
        ("::1", "::1/128"),
        (" 198.51.100.0/24 ", "198.51.100.0/24"),
    ],
)
def test_parse_network_accepts(text: str, expected: str) -> None:
    assert str(parse_network(text)) == expected


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),  # host bits set: a typo, never silently widened
        ("10.0.0.0/33", "is not a CIDR"),
        ("not-a-cidr", "is not a CIDR"),
        ("", "is not a CIDR"),
        (None, "is not a CIDR"),
        (42, "is not a CIDR"),
    ],
)
def test_parse_network_refuses_and_names_the_value(value: object, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_network(value, field="spec.networks[0].cidr")
    assert needle in exc.value.message
    assert "spec.networks[0].cidr" in exc.value.message


def test_except_must_narrow_its_cidr_and_every_problem_is_reported() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_network_match("10.0.0.0/8", ["192.0.2.0/24", "2001:db8::/32", "junk"])
    msg = exc.value.message
    assert "192.0.2.0/24 is not inside 10.0.0.0/8" in msg
    assert "2001:db8::/32 is not inside 10.0.0.0/8" in msg
    assert "'junk' is not a CIDR" in msg


def test_except_carves_out() -> None:
    rule = parse_network_match("10.0.0.0/8", ["10.9.0.0/16"])
    assert match_network(rule, "10.1.2.3")
    assert not match_network(rule, "10.9.1.1")
    assert not match_network(rule, "11.0.0.1")
    assert str(rule) == "10.0.0.0/8 except 10.9.0.0/16"


def test_ipv4_mapped_ipv6_peer_matches_ipv4_networks() -> None:
    # What a dual-stack listener reports for an IPv4 client.
    nets = NetworkSet([parse_network_match("192.0.2.0/24")])
    assert nets.match("::ffff:192.0.2.10")
    assert parse_ip("::ffff:192.0.2.10") == ipaddress.IPv4Address("192.0.2.10")


def test_network_set_fails_closed_on_junk_and_empty() -> None:
    nets = NetworkSet([parse_network_match("0.0.0.0/0"), parse_network_match("::/0")])
    assert not nets.match("not an ip")
    assert not nets.match(None)
    assert not NetworkSet().match("192.0.2.1")
    with pytest.raises(InvalidInput):
        parse_ip("300.1.1.1")


def test_a_later_entry_matches_when_an_earlier_one_excepts() -> None:
    nets = NetworkSet([parse_network_match("10.0.0.0/8", ["10.9.0.0/16"]), parse_network_match("10.9.0.0/24")])
    assert nets.match("10.9.0.5")
    assert not nets.match("10.9.1.5")


# --- hypothesis: NetworkSet agrees with ipaddress ------------------------------------------------


@st.composite
def networks(draw: st.DrawFn, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    addr = draw(st.integers(0, 2**bits - 1))
    return _network_class(version)((addr, prefix), strict=False)


def _network_class(version: int) -> type:
    # ip_network((int, prefix)) guesses the family from the integer; be explicit.
    return ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network


@st.composite
def inside(draw: st.DrawFn, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return int(net.network_address) + draw(st.integers(0, net.num_addresses - 1))


@st.composite
def rule_and_ips(draw: st.DrawFn) -> tuple[NetworkMatch, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    net = draw(networks(version))
    excepts = []
    for _ in range(draw(st.integers(0, 3))):
        prefix = draw(st.integers(net.prefixlen, bits))
        excepts.append(_network_class(version)((draw(inside(net)), prefix), strict=False))
    rule = parse_network_match(str(net), [str(e) for e in excepts])
    factory = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    ips = [factory(draw(inside(net))) for _ in range(3)]
    ips += [factory(draw(inside(e))) for e in excepts]
    ips.append(factory(draw(st.integers(0, 2**bits - 1))))
    ips.append(draw(st.sampled_from([ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv6Address("2001:db8::1")])))
    return rule, ips


@settings(max_examples=150, deadline=None)
@given(rule_and_ips())
def test_matching_agrees_with_ipaddress(case: tuple[NetworkMatch, list]) -> None:
    rule, ips = case
    compiled = NetworkSet([rule])
    for ip in ips:
        expected = ip.version == rule.cidr.version and ip in rule.cidr and not any(ip in e for e in rule.except_)
        assert match_network(rule, ip) is expected
        assert compiled.match(ip) is expected
        assert compiled.match(str(ip)) is expected  # text and address objects alike
