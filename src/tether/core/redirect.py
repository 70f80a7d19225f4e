"""Transparent-proxy redirection rules (iptables, nat table), as pure text.

`tether connect redirect-traffic` sends an application's outbound TCP to its sidecar's
outbound listener and inbound TCP to the sidecar's public listener, exempting the
proxy's own traffic by uid, like `consul connect redirect-traffic` (same chain layout,
TETHER_ names). The rules are applied with one `iptables-restore --noflush`, which is
atomic: either every rule is in place or none is.

    OUTPUT -p tcp -> TETHER_PROXY_OUTPUT
        not a SYN (a connection older than the rules), proxy uid, excluded uids, 127.0.0.1/32, excluded ports and CIDRs -> RETURN
        everything else -> TETHER_PROXY_REDIRECT -> REDIRECT --to-ports <outbound>
    PREROUTING -p tcp -> TETHER_PROXY_INBOUND
        not a SYN, excluded inbound ports -> RETURN
        everything else -> TETHER_PROXY_IN_REDIRECT -> REDIRECT --to-ports <inbound>
    (with a DNS address) OUTPUT -p udp --dport 53 -> TETHER_DNS_REDIRECT -> DNAT
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tether.core.errors import InvalidInput

OUTPUT_CHAIN = "TETHER_PROXY_OUTPUT"
REDIRECT_CHAIN = "TETHER_PROXY_REDIRECT"
INBOUND_CHAIN = "TETHER_PROXY_INBOUND"
IN_REDIRECT_CHAIN = "TETHER_PROXY_IN_REDIRECT"
DNS_CHAIN = "TETHER_DNS_REDIRECT"
CHAINS = (OUTPUT_CHAIN, REDIRECT_CHAIN, INBOUND_CHAIN, IN_REDIRECT_CHAIN, DNS_CHAIN)

DEFAULT_OUTBOUND_PORT = 15001  # Consul's TransparentProxy.OutboundListenerPort default

_JUMPS = (
    ("OUTPUT", f"-p tcp -j {OUTPUT_CHAIN}"),
    ("PREROUTING", f"-p tcp -j {INBOUND_CHAIN}"),
    ("OUTPUT", f"-p udp -m udp --dport 53 -j {DNS_CHAIN}"),
)


@dataclass(frozen=True)
class RedirectConfig:
    proxy_uid: int
    inbound_port: int
    outbound_port: int = DEFAULT_OUTBOUND_PORT
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    exclude_uids: tuple[int, ...] = ()
    dns_address: str = ""  # "IP" or "IP:PORT": where DNS queries go (Tether's DNS server)


def check_redirect_config(c: RedirectConfig) -> RedirectConfig:
    """Validate every field; one InvalidInput naming all offending values."""
    errors = []
    for name in ("proxy_uid",):
        if getattr(c, name) < 0:
            errors.append(f"-proxy-uid: must be a user ID (0 or more), got {c.proxy_uid}")
    for name, port in (("-proxy-inbound-port", c.inbound_port), ("-proxy-outbound-port", c.outbound_port)):
        if not 1 <= port <= 65535:
            errors.append(f"{name}: {port} is not a port (1-65535)")
    for flag, ports in (("-exclude-inbound-port", c.exclude_inbound_ports),
                        ("-exclude-outbound-port", c.exclude_outbound_ports)):
        errors += [f"{flag}: {p} is not a port (1-65535)" for p in ports if not 1 <= p <= 65535]
    for cidr in c.exclude_outbound_cidrs:
        try:
            ipaddress.IPv4Network(cidr, strict=False)
        except ValueError:
            errors.append(f"-exclude-outbound-cidr: {cidr!r} is not an IPv4 address or CIDR")
    errors += [f"-exclude-uid: {u} is not a user ID" for u in c.exclude_uids if u < 0]
    if c.dns_address:
        host, _, port = c.dns_address.partition(":")
        try:
            ipaddress.IPv4Address(host)
            if port and not 1 <= int(port) <= 65535:
                raise ValueError
        except ValueError:
            errors.append(f"-dns-address: {c.dns_address!r} must be IP or IP:PORT")
    if errors:
        raise InvalidInput("; ".join(errors))
    return c


def installed_chains(iptables_save: str) -> set[str]:
    """Our chains present in `iptables-save -t nat` output."""
    return {line[1:].split()[0] for line in iptables_save.splitlines()
            if line.startswith(":") and line[1:].split()[0] in CHAINS}


def _present_jumps(iptables_save: str) -> set[tuple[str, str]]:
    present = set()
    for line in iptables_save.splitlines():
        for chain, rule in _JUMPS:
            if line.strip() == f"-A {chain} {rule}":
                present.add((chain, rule))
    return present


def format_install(c: RedirectConfig, iptables_save: str = "") -> str:
    """The iptables-restore script that installs (or refreshes) the rules.

    Declaring a chain flushes it, so a second run replaces our rules rather than
    duplicating them; the jumps from OUTPUT/PREROUTING are added only when missing.
    """
    check_redirect_config(c)
    lines = ["*nat"] + [f":{chain} - [0:0]" for chain in CHAINS]
    # Only a connection's first packet (SYN) is redirected. Connections opened before the
    # nat table existed in this namespace are unknown to conntrack, which would take their
    # next packet (a reply, mid-stream) for a new connection and redirect it, breaking it;
    # this way installing the rules never cuts a live connection.
    out = [f"-A {OUTPUT_CHAIN} -p tcp -m tcp ! --syn -j RETURN",
           f"-A {OUTPUT_CHAIN} -m owner --uid-owner {c.proxy_uid} -j RETURN"]
    out += [f"-A {OUTPUT_CHAIN} -m owner --uid-owner {uid} -j RETURN" for uid in c.exclude_uids]
    out.append(f"-A {OUTPUT_CHAIN} -d 127.0.0.1/32 -j RETURN")
    out += [f"-A {OUTPUT_CHAIN} -p tcp -m tcp --dport {p} -j RETURN" for p in c.exclude_outbound_ports]
    out += [f"-A {OUTPUT_CHAIN} -d {ipaddress.IPv4Network(cidr, strict=False)} -j RETURN"
            for cidr in c.exclude_outbound_cidrs]
    out.append(f"-A {OUTPUT_CHAIN} -j {REDIRECT_CHAIN}")
    out.append(f"-A {REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {c.outbound_port}")
    inbound = [f"-A {INBOUND_CHAIN} -p tcp -m tcp ! --syn -j RETURN"]
    inbound += [f"-A {INBOUND_CHAIN} -p tcp -m tcp --dport {p} -j RETURN" for p in c.exclude_inbound_ports]
    inbound.append(f"-A {INBOUND_CHAIN} -p tcp -j {IN_REDIRECT_CHAIN}")
    inbound.append(f"-A {IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {c.inbound_port}")
    dns = []
    if c.dns_address:
        host, _, port = c.dns_address.partition(":")
        dns.append(f"-A {DNS_CHAIN} -p udp -m udp --dport 53 -j DNAT --to-destination {host}:{port or 53}")
    present = _present_jumps(iptables_save)
    wanted = list(_JUMPS[:2]) + ([_JUMPS[2]] if c.dns_address else [])
    jumps = [f"-A {chain} {rule}" for chain, rule in wanted if (chain, rule) not in present]
    # A DNS jump left from an earlier run with DNS is removed when DNS is no longer asked for.
    if not c.dns_address and _JUMPS[2] in present:
        jumps.append(f"-D {_JUMPS[2][0]} {_JUMPS[2][1]}")
    return "\n".join(lines + out + inbound + dns + jumps + ["COMMIT", ""])


def format_cleanup(iptables_save: str) -> str:
    """The iptables-restore script that removes every rule and chain we installed."""
    present = installed_chains(iptables_save)
    if not present:
        return ""
    lines = ["*nat"]
    lines += [f"-D {chain} {rule}" for chain, rule in _JUMPS if (chain, rule) in _present_jumps(iptables_save)]
    lines += [f"-F {chain}" for chain in CHAINS if chain in present]
    lines += [f"-X {chain}" for chain in CHAINS if chain in present]
    return "\n".join(lines + ["COMMIT", ""])
