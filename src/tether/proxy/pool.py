"""Upstream instance pool: load balancing and passive outlier detection.

Pure bookkeeping (no sockets, no clock: callers pass `now`, a monotonic time in seconds),
so it is tested with plain tables and hypothesis. The upstream listener asks `pick()` for
an instance per connection attempt and reports back with `connect_ok` / `connect_failed` /
`released`.

Outlier detection follows Envoy's consecutive-connect-failure idea: after
`eject_after` consecutive failures an instance is ejected for `eject_base * 2**(n-1)`
seconds (n = how many times it was ejected in a row, capped at `eject_max`). A success
resets both counters. When every instance is ejected the pool "panics" and picks among
all of them rather than refusing traffic (a whole-service outage is better found by
trying than by guessing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

ROUND_ROBIN = "round_robin"
LEAST_CONN = "least_conn"
POLICIES = (ROUND_ROBIN, LEAST_CONN)

#: Consecutive connect failures before ejection (Envoy's consecutive_5xx default is 5; connect
#: failures are a stronger signal, so fewer are needed).
DEFAULT_EJECT_AFTER = 3
#: First ejection period; doubles on each consecutive ejection (Envoy base_ejection_time 30 s;
#: shorter here because a sidecar restart takes seconds, not minutes).
DEFAULT_EJECT_BASE = 10.0
#: Longest ejection period (Envoy max_ejection_time default 300 s).
DEFAULT_EJECT_MAX = 300.0


@dataclass(frozen=True, slots=True)
class Instance:
    """One address of the destination service, and the identity it must present."""

    host: str
    port: int
    spiffe_id: str | None = None  # None: the upstream's destination SPIFFE ID

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Member:
    """Mutable per-instance state kept across pool updates."""

    __slots__ = ("instance", "active", "failures", "ejections", "ejected_until")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.active = 0
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0

    def healthy(self, now: float) -> bool:
        return self.ejected_until <= now


class Pool:
    """The instances of one upstream with their load-balancing and ejection state."""

    def __init__(self, instances: Iterable[Instance] = (), policy: str = ROUND_ROBIN, *,
                 eject_after: int = DEFAULT_EJECT_AFTER, eject_base: float = DEFAULT_EJECT_BASE,
                 eject_max: float = DEFAULT_EJECT_MAX) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}: use one of {', '.join(POLICIES)}")
        self.policy = policy
        self.eject_after = max(1, eject_after)
        self.eject_base = eject_base
        self.eject_max = eject_max
        self.members: list[Member] = []
        self._next = 0
        self.update(instances)

    def update(self, instances: Iterable[Instance]) -> None:
        """Replace the instance set; members that stay keep their counters and ejection."""
        old = {(m.instance.host, m.instance.port): m for m in self.members}
        members = []
        for inst in dict.fromkeys(instances):  # de-duplicate, keep order
            m = old.get((inst.host, inst.port))
            if m is None:
                m = Member(inst)
            else:
                m.instance = inst
            members.append(m)
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    def pick(self, now: float, exclude: Iterable[Member] = ()) -> Member | None:
        """The member for the next attempt, or None when nothing is left to try."""
        tried = set(map(id, exclude))
        candidates = [m for m in self.members if id(m) not in tried]
        if not candidates:
            return None
        healthy = [m for m in candidates if m.healthy(now)]
        pool = healthy or candidates  # panic mode: all ejected, try them anyway
        start = self._next % len(pool)
        self._next += 1
        if self.policy == ROUND_ROBIN:
            return pool[start]
        # least connections; ties go round-robin so equal members share the load
        rotated = pool[start:] + pool[:start]
        return min(rotated, key=lambda m: m.active)

    def connect_ok(self, member: Member) -> None:
        member.active += 1
        member.failures = 0
        member.ejections = 0
        member.ejected_until = 0.0

    def connect_failed(self, member: Member, now: float) -> bool:
        """Record a failed attempt; True when this failure ejected the member."""
        member.failures += 1
        if member.failures < self.eject_after:
            return False
        member.failures = 0
        member.ejections += 1
        period = min(self.eject_max, self.eject_base * 2 ** (member.ejections - 1))
        member.ejected_until = now + period
        return True

    def released(self, member: Member) -> None:
        if member.active > 0:
            member.active -= 1

    def snapshot(self, now: float) -> list[dict]:
        """Plain view for debugging endpoints and tests."""
        return [{"address": m.instance.address, "active": m.active, "failures": m.failures,
                 "ejected": not m.healthy(now)} for m in self.members]
