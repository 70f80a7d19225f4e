"""The sidecar->gateway preamble (pure) and the gateway's route-on-SNI decision."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from tether.core.external import EgressSnapshot, ExternalService, OutboundMode, OutboundPolicy, Protocol
from tether.core.external import ServicePort, TargetKind, decide_egress
from tether.proxy.egress.preamble import MAX_PREAMBLE, format_preamble, parse_preamble

ips = st.one_of(st.none(), st.ip_addresses().map(str))
ports = st.integers(1, 65535)


@given(ips, ports, st.binary(max_size=50))
def test_parse_reads_back_what_format_wrote_and_leaves_the_rest(ip, port, rest):
    data = format_preamble(ip, port) + rest
    got_ip, got_port, used = parse_preamble(data)
    assert (got_ip, got_port, data[used:]) == (str(ipaddress.ip_address(ip)) if ip else None, port, rest)
    for cut in range(used):  # any prefix asks for more bytes
        assert parse_preamble(data[:cut]) is None


@given(st.binary(max_size=200))
def test_noise_is_refused_with_value_error_only(data):
    """The parser's contract on any input: a value, None (need more bytes), or ValueError."""
    try:
        got = parse_preamble(data)
    except ValueError:
        return
    if got is not None:
        ip, port, used = got
        assert ip is None or ipaddress.ip_address(ip)
        assert 0 < port < 65536 and 0 < used <= len(data) and data[used - 2:used] == b"\r\n"
        assert parse_preamble(data[:used]) == got  # what it consumed is the whole preamble


@pytest.mark.parametrize("prefix", [b"", b"T", b"TETHER-EGRESS/1 ", b"TETHER-EGRESS/1 192.0.2.1 443"])
def test_a_prefix_of_a_preamble_asks_for_more(prefix):
    assert parse_preamble(prefix) is None


@pytest.mark.parametrize("noise", [b"\x16\x03\x01", b"SSH-2.0-OpenSSH\r\n", b"tether-egress/1 1.2.3.4 80\r\n"])
def test_noise_raises_value_error(noise):
    with pytest.raises(ValueError):
        parse_preamble(noise)


@pytest.mark.parametrize("bad", [b"GET / HTTP/1.1\r\n", b"TETHER-EGRESS/1 1.2.3.4 0\r\n",
                                 b"TETHER-EGRESS/1 1.2.3.4 080\r\n", b"TETHER-EGRESS/1 1.2.3.400 80\r\n",
                                 b"TETHER-EGRESS/1 - 80 x\r\n", b"TETHER-EGRESS/1 " + b"1" * MAX_PREAMBLE])
def test_malformed_preambles_are_refused(bad):
    with pytest.raises(ValueError):
        parse_preamble(bad)


def test_the_gateway_routes_tls_on_the_sni_never_on_the_claimed_ip():
    snap = EgressSnapshot.build([ExternalService("payments", hosts=("*.payments.example",),
                                                 ports=(ServicePort(443, "tls", Protocol.TLS),))],
                                OutboundPolicy(OutboundMode.REGISTRY_ONLY))
    sidecar = decide_egress(snap, "web", "203.0.113.66", 443, "api.payments.example")
    assert sidecar.target.kind == TargetKind.ORIGINAL_DST  # the sidecar forwards where the app was going
    gateway = decide_egress(snap, "web", "203.0.113.66", 443, "api.payments.example", route_on_sni=True)
    assert gateway.allowed and gateway.target.kind == TargetKind.DNS
    assert gateway.target.addresses == (("api.payments.example", 443),)
