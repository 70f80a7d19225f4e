"""The iptables rule text for transparent proxying (pure)."""

from __future__ import annotations

import pytest

from tether.core.errors import InvalidInput
from tether.core.redirect import RedirectConfig, format_cleanup, format_install, installed_chains


def test_install_script_layout():
    script = format_install(RedirectConfig(proxy_uid=1234, inbound_port=20000, exclude_outbound_ports=(5432,),
                                           exclude_outbound_cidrs=("10.1.2.3",), exclude_inbound_ports=(22,)))
    lines = script.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    body = "\n".join(lines)
    order = ["--uid-owner 1234 -j RETURN", "-d 127.0.0.1/32 -j RETURN", "--dport 5432 -j RETURN",
             "-d 10.1.2.3/32 -j RETURN", "-A TETHER_PROXY_OUTPUT -j TETHER_PROXY_REDIRECT"]
    positions = [body.index(fragment) for fragment in order]
    assert positions == sorted(positions)  # exemptions come before the catch-all redirect
    assert "REDIRECT --to-ports 15001" in body and "REDIRECT --to-ports 20000" in body
    assert "-A OUTPUT -p tcp -j TETHER_PROXY_OUTPUT" in body and "-A PREROUTING -p tcp -j TETHER_PROXY_INBOUND" in body
    assert "TETHER_DNS_REDIRECT -p udp" not in body


def test_refresh_does_not_add_jumps_twice_and_drops_stale_dns():
    first = format_install(RedirectConfig(proxy_uid=0, inbound_port=20000, dns_address="127.0.0.1:8600"))
    saved = "\n".join(":" + c + " - [0:0]" for c in ("TETHER_PROXY_OUTPUT", "TETHER_DNS_REDIRECT")) + "\n" + \
        "\n".join(line for line in first.splitlines() if line.startswith("-A OUTPUT") or line.startswith("-A PREROUTING"))
    again = format_install(RedirectConfig(proxy_uid=0, inbound_port=20000), saved)
    assert "-A OUTPUT -p tcp" not in again and "-A PREROUTING" not in again
    assert "-D OUTPUT -p udp -m udp --dport 53 -j TETHER_DNS_REDIRECT" in again
    assert installed_chains(saved) == {"TETHER_PROXY_OUTPUT", "TETHER_DNS_REDIRECT"}
    cleanup = format_cleanup(saved)
    assert "-X TETHER_PROXY_OUTPUT" in cleanup and "-D OUTPUT -p tcp -j TETHER_PROXY_OUTPUT" in cleanup
    assert format_cleanup("") == ""


def test_every_bad_value_is_named_at_once():
    with pytest.raises(InvalidInput) as err:
        format_install(RedirectConfig(proxy_uid=-1, inbound_port=0, exclude_outbound_ports=(70000,),
                                      exclude_outbound_cidrs=("nope",), dns_address="x:1"))
    message = str(err.value)
    for fragment in ("-proxy-uid", "-proxy-inbound-port", "70000", "'nope'", "-dns-address"):
        assert fragment in message
