"""A static allow-list authorizer for the standalone proxy (tests and benchmarks).

The real mesh passes the agent's intention `decide()` instead; both return a value with
`.allowed`, `.reason` and `.audit`, which is all the engine reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

ANY = "*"


class Decision(NamedTuple):
    """Allowed or not, and why (a NamedTuple: built on every inbound connection)."""

    allowed: bool
    reason: str
    audit: bool = False


@dataclass(frozen=True, slots=True)
class StaticAllowList:
    """Allow exactly the listed client SPIFFE IDs ("*" = any verified identity)."""

    allowed: frozenset[str]
    destination: str = ""

    def __call__(self, source: str | None, peer_ip: str, port: int) -> Decision:
        if source is None:
            return Decision(False, "client certificate has no SPIFFE URI SAN")
        if source in self.allowed:
            return Decision(True, f"Matched static allow: {source} => {self.destination or port}")
        if ANY in self.allowed:
            return Decision(True, f"Matched static allow: * => {self.destination or port}")
        return Decision(False, f"no static allow entry for {source} (default deny)")
