"""CIDR matching with exceptions: "in 10.0.0.0/8 but not in 10.9.0.0/16".

Used by server policy (core/policy.py) for client networks — Linkerd's
`networks: [{cidr, except: [...]}]` — and by the snapshot for the cluster and probe
networks. Pure: networks are parsed once into integer (start, end) ranges, so a match
on the per-connection path is a few integer comparisons, and always agrees with
`ipaddress` (tests/core/test_cidr.py holds that with hypothesis).

One deliberate normalisation: an IPv4-mapped IPv6 peer address (`::ffff:192.0.2.1`,
what a dual-stack listener reports for an IPv4 client) is matched as the IPv4 address
it carries, so an IPv4 CIDR covers IPv4 clients whichever socket family accepted them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Networks the agent's own health probes come from (see core/authz.py, the probe rule).
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


def parse_ip(value: object) -> IPAddress:
    """An address from text (or an address object), with IPv4-mapped IPv6 unwrapped."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        addr = value
    else:
        try:
            addr = ipaddress.ip_address(value if isinstance(value, str) else str(value))
        except ValueError:
            raise InvalidInput(f"IP address {value!r} does not parse; write e.g. 192.0.2.10 or 2001:db8::1") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_network(value: object, *, field: str = "cidr") -> IPNetwork:
    """A network from `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).

    Host bits set (`10.0.0.1/8`) is refused: it is almost always a typo, and silently
    widening or narrowing an authorization is worse than an error.
    """
    where = f"{field}: " if field else ""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}{value!r} is not a CIDR; write e.g. 10.0.0.0/8 or 2001:db8::/32")
    text = value.strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"{where}{value!r} is not a CIDR; write e.g. 10.0.0.0/8 or 2001:db8::/32") from None
    raise InvalidInput(f"{where}{value!r} has host bits set; did you mean {loose}?")


@dataclass(frozen=True, slots=True)
class NetworkMatch:
    """One `{cidr, except}` entry: addresses in `cidr` and in none of `except_`."""

    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()

    def __str__(self) -> str:
        if not self.except_:
            return str(self.cidr)
        return f"{self.cidr} except {', '.join(str(e) for e in self.except_)}"


def parse_network_match(cidr: object, except_: Sequence[object] = (), *, field: str = "networks") -> NetworkMatch:
    """Validate one `{cidr, except}` entry; every problem is reported in one InvalidInput.

    Each `except` network must lie inside `cidr` (same family): an exception outside
    the range it carves from is a mistake in the policy, not a no-op to ignore.
    """
    errors: list[str] = []
    try:
        net = parse_network(cidr, field=f"{field}.cidr")
    except InvalidInput as exc:
        errors.append(exc.message)
        net = None
    excepted: list[IPNetwork] = []
    for i, raw in enumerate(except_):
        try:
            sub = parse_network(raw, field=f"{field}.except[{i}]")
        except InvalidInput as exc:
            errors.append(exc.message)
            continue
        if net is not None and (sub.version != net.version or not sub.subnet_of(net)):  # type: ignore[arg-type]
            errors.append(f"{field}.except[{i}]: {sub} is not inside {net}; an exception must narrow its cidr")
            continue
        excepted.append(sub)
    if errors:
        raise InvalidInput("; ".join(errors))
    assert net is not None
    return NetworkMatch(net, tuple(excepted))


def match_network(rule: NetworkMatch, ip: object) -> bool:
    """True when `ip` is in `rule.cidr` and in none of its exceptions (the reference form)."""
    addr = parse_ip(ip)
    if addr.version != rule.cidr.version or addr not in rule.cidr:
        return False
    return not any(addr in sub for sub in rule.except_)


class NetworkSet:
    """Several NetworkMatch entries compiled to integer ranges; matches if any entry does.

    Built once per policy snapshot; `match` is what the per-connection path calls.
    """

    __slots__ = ("_ranges", "rules")

    def __init__(self, rules: Iterable[NetworkMatch] = ()) -> None:
        self.rules: tuple[NetworkMatch, ...] = tuple(rules)
        # (version, start, end, ((start, end), ...excepted)) per rule.
        self._ranges = tuple(
            (r.cidr.version, *_bounds(r.cidr), tuple(_bounds(e) for e in r.except_)) for r in self.rules
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __repr__(self) -> str:
        return f"NetworkSet([{', '.join(str(r) for r in self.rules)}])"

    def match(self, ip: object) -> bool:
        """True when `ip` (text or address object) falls in any entry; never raises on junk."""
        if not self._ranges or ip is None:
            return False
        try:
            addr = parse_ip(ip)
        except InvalidInput:
            return False  # an unparseable peer address matches no network: fail closed
        version, value = addr.version, int(addr)
        for v, start, end, excepted in self._ranges:
            if v == version and start <= value <= end:
                if not any(s <= value <= e for s, e in excepted):
                    return True
        return False


def _bounds(net: IPNetwork) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)
