"""The sidecar's own listener check: the proxy tells its agent whether it is listening.

The agent registers a sidecar with a TTL check named "Connect Sidecar Listening"
(core/registration.py). The proxy that serves that registration finds the check and
refreshes it through the agent (`PUT /v1/agent/check/update/<id>`) every third of its TTL
and at once when its state changes: passing, with its pid and the address its listening
socket really has, while its public listener is open on the registration's port; critical,
with the reason, when the listener could not be opened, is gone, or the proxy is draining.
A TCP connect cannot tell a sidecar from any other process that holds its port; this can,
and it needs no waiting for a probe interval: a new sidecar is healthy as soon as it listens.

A proxy killed without a word stops refreshing, and the agent turns the check critical when
its TTL runs out. While the agent is unreachable the reports fail quietly (fail static: the
proxy keeps serving) and start again when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

from tether.core.duration import parse_duration
from tether.core.errors import TetherError
from tether.core.health import CRITICAL, PASSING, SIDECAR_LISTENING_CHECK
from tether.proxy.agentclient import AgentClient

log = logging.getLogger("tether.proxy.sidecar")

#: How long a last report (draining, or a failed start) may hold up the proxy's exit.
LAST_REPORT_TIMEOUT = 1.0

State = Callable[[], tuple[str, str]]  # () -> (status, output)


async def find_listening_check(client: AgentClient, proxy_id: str) -> tuple[str, float] | None:
    """(check ID, TTL seconds) of the registration's listener check; None when it has none
    (a registration with checks of its own)."""
    checks = (await client.get("/v1/agent/checks")).body or {}
    for check_id, check in sorted(checks.items()):
        if (check.get("ServiceID"), check.get("Name"), check.get("Type")) == (proxy_id, SIDECAR_LISTENING_CHECK, "ttl"):
            return check_id, parse_duration((check.get("Definition") or {}).get("TTL") or "0s") or 0.0
    return None


def listening_state(bound: tuple[str, int] | None, wanted: tuple[str, int] | None, *, draining: bool,
                    error: str = "") -> tuple[str, str]:
    """The check's (status, output) from the listener the proxy has (`bound`, None if none),
    the one its registration asks for (`wanted`, port 0: any) and why opening it failed."""
    pid = os.getpid()
    if draining:
        return CRITICAL, f"tether proxy pid {pid} is draining: no new connections"
    if error:
        return CRITICAL, f"tether proxy pid {pid}: {error}"
    if wanted is None:
        return CRITICAL, "no public listener: the registration has no LocalServicePort"
    if bound is None or (wanted[1] and bound[1] != wanted[1]):
        return CRITICAL, "tether proxy pid %d is not listening on %s:%s" % (pid, *wanted)
    return PASSING, "tether proxy pid %d listening on %s:%s" % (pid, *bound)


class ListenerCheck:
    """Keeps one TTL check current from `state()`; `poke()` after a change reports at once."""

    def __init__(self, client: AgentClient, check_id: str, ttl: float, state: State) -> None:
        self.client = client
        self.check_id = check_id
        self.every = max(ttl / 3, 0.1)
        self.state = state
        self._poked = asyncio.Event()
        self._last: tuple[str, str] | None = None

    def poke(self) -> None:
        self._poked.set()

    async def report(self) -> None:
        status, output = self.state()
        await self.client.put(f"/v1/agent/check/update/{self.check_id}", {"Status": status, "Output": output})
        if (status, output) != self._last:
            log.info("listener check %s: %s (%s)", self.check_id, status, output)
        self._last = (status, output)

    async def last_report(self, state: tuple[str, str]) -> None:
        """Report `state` once (draining, a failed start), never delaying the exit for long:
        the agent may be gone."""
        self.state = lambda: state
        try:
            await asyncio.wait_for(self.report(), LAST_REPORT_TIMEOUT)
        except (TetherError, asyncio.TimeoutError):
            pass

    async def run(self) -> None:
        while True:
            self._poked.clear()
            try:
                await self.report()
            except TetherError as e:  # the agent is away: the watches say so; try again next round
                log.debug("listener check %s not reported: %s", self.check_id, e)
            try:
                await asyncio.wait_for(self._poked.wait(), self.every)
            except asyncio.TimeoutError:
                pass
