"""How long a sidecar may serve without its agent: until its leaf certificate expires.

Fail static keeps a sidecar serving with its last identity, roots and policy while the
local agent is away (crashed, killed, restarting). That is only worth anything while the
leaf is valid: past its ValidBefore every peer refuses the certificate, and nobody but the
agent can issue another. So once the leaf has expired *and* the agent is unreachable, the
sidecar gives up: it stops accepting, says why in one line, drains and exits (a returning
agent starts a fresh one). An expired leaf with the agent reachable is the agent's
business (it renews through the server); that is logged once and the sidecar goes on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Callable

from tether.core.certwindow import is_expired

log = logging.getLogger("tether.proxy.sidecar")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeafDeadline:
    """Calls `give_up(reason)` once the leaf has expired while the agent is unreachable."""

    def __init__(self, agent: str, give_up: Callable[[str], None], *,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.agent = agent
        self.give_up = give_up
        self.now = now
        self.service = ""
        self.valid_before: datetime | None = None
        self.lost_since: datetime | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._warned = False

    def set_leaf(self, leaf: dict[str, Any]) -> None:
        """A (new) leaf: its ValidBefore is the deadline from now on."""
        try:
            self.valid_before = _utc(leaf["ValidBefore"])
        except (KeyError, TypeError, ValueError):
            log.warning("leaf for %s has no readable ValidBefore; serving without an expiry deadline",
                        leaf.get("Service"))
            self.valid_before = None
        self.service = leaf.get("Service") or self.service
        self._warned = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.valid_before is not None:
            delay = max(0.0, (self.valid_before - self.now()).total_seconds())
            self._timer = asyncio.get_running_loop().call_later(delay, self.check)

    def agent_lost(self) -> None:
        if self.lost_since is None:
            self.lost_since = self.now()
        self.check()

    def agent_back(self) -> None:
        self.lost_since = None

    def check(self) -> None:
        if self.valid_before is None or not is_expired(self.now(), self.valid_before):
            return
        if self.lost_since is not None:
            self.give_up(f"the leaf certificate of {self.service} expired at {self.valid_before.isoformat()} and "
                         f"the agent at {self.agent} has been unreachable since {self.lost_since.isoformat()}; "
                         "no longer accepting connections")
        elif not self._warned:
            self._warned = True
            log.warning("the leaf certificate of %s expired at %s; the agent at %s is reachable but has not "
                        "renewed it (can it reach its server?)", self.service, self.valid_before.isoformat(),
                        self.agent)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
