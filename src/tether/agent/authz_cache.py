"""The agent's authorization cache: an immutable PolicySnapshot kept current by a blocking watch.

The agent asks the control plane for its authorization state (intentions, server
policies, mesh settings; `ServerLink.authz_state`) with a blocking query, builds a new
PolicySnapshot from each answer that changed, and swaps it in with one attribute
assignment. `decide` reads that attribute once and calls the pure `core.authz.decide`:
no lock, no I/O, so the proxy (in process) and `/v1/agent/connect/authorize` answer in
microseconds, and a reader never sees a half-built snapshot.

Fail static: when the server cannot be reached, or answers with state that does not
build, the last good snapshot stays in place (and the failure is logged once per
outage); the watch retries with backoff. In dev mode the link waits on the store
itself, so a write is visible to `decide` as soon as the event loop runs the watcher.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tether.agent.link import ServerLink
from tether.core.authz import Decision, PolicySnapshot, Source, decide
from tether.core.errors import InvalidInput, PermissionDenied
from tether.core.policy_yaml import snapshot_from_state

log = logging.getLogger("tether.agent.authz")

#: How long one blocking watch waits on the server before asking again (Consul's default wait).
WATCH_WAIT = 300.0
#: Retry backoff while the server is unreachable: from RETRY_MIN doubling up to RETRY_MAX seconds.
RETRY_MIN = 0.1
RETRY_MAX = 5.0


class AuthzCache:
    """Holds `snapshot` (a PolicySnapshot) and `state` (the inputs it was built from)."""

    def __init__(self, link: ServerLink, *, wait: float = WATCH_WAIT) -> None:
        self.link = link
        self.wait = wait
        self.trust_domain = ""
        self.snapshot: PolicySnapshot | None = None
        self.state: dict[str, Any] = {}
        self.failing = False  # True while the watch cannot reach the server (serving the last snapshot)
        self.refused = ""  # why the server refused the state to this agent's token, while it does
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.parked = 0  # blocking readers waiting in wait_for_change now (tests wait for them)

    @property
    def index(self) -> int:
        """The store index the current snapshot reflects (0 before the first one)."""
        snap = self.snapshot
        return (snap.index or 0) if snap is not None else 0

    async def start(self, trust_domain: str) -> None:
        """Fetch the state once (raising if the server cannot answer), then keep watching.

        A server that refuses (the agent's token may not read every intention) does not stop
        the agent: it starts with no state, denies every authorization meanwhile (fail
        closed, naming why) and loads the state as soon as its token is allowed."""
        self.trust_domain = trust_domain
        try:
            self._install(await self.link.authz_state(0, 0))
        except PermissionDenied as exc:
            self.refused, self.failing = str(exc), True
            log.warning("the server refuses the agent's token the authorization state (%s); every connection "
                        "is denied until acl.tokens.agent (or 'tether acl set-agent-token agent') may read "
                        "every intention", exc)
        self._task = asyncio.create_task(self._watch(), name="authz-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def decide(self, source: Source, destination: str, port: int | None, *, explain: bool = False,
               namespace: str | None = None) -> Decision:
        """Allow or deny one connection from the current snapshot (pure; no lock, no I/O);
        `namespace`: the destination's, by default the one it is registered in."""
        snap = self.snapshot
        if snap is None:
            return Decision(False, False, None, f"no authorization state yet: {self.refused or 'loading'}")
        return decide(snap, source, destination, port, explain=explain, namespace=namespace)

    async def wait_for_change(self, index: int, timeout: float) -> None:
        """Return once the snapshot's index differs from `index`, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.index == index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.parked += 1
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return
            finally:
                self.parked -= 1

    def _install(self, state: dict[str, Any]) -> None:
        previous = self.snapshot
        known = {(i.id, i.modify_index): i for i in previous.intentions} if previous else None
        snap = snapshot_from_state(state, self.trust_domain, known=known)  # type: ignore[arg-type]
        self.state = state
        self.snapshot = snap  # the one atomic swap readers see
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        log.debug("authorization snapshot now at index %s (%d intentions)", snap.index, len(snap.intentions))

    async def _watch(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                state = await self.link.authz_state(self.index, self.wait)
            except Exception as exc:  # noqa: BLE001 - any failure (transport, a garbled answer) must not end the watch
                if not self.failing:
                    log.warning("cannot refresh authorization state; deciding from the last snapshot (index %s): %s",
                                self.index, exc)
                self.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self.failing or self.refused:
                log.info("authorization watch reconnected at index %s", state.get("Index"))
                self.refused = ""
            self.failing, delay = False, RETRY_MIN
            if state.get("Index") == self.index:
                continue  # the wait timed out: nothing changed
            try:
                self._install(state)
            except InvalidInput as exc:
                # Should not happen (the server validated every document); keep the last good snapshot.
                log.error("authorization state at index %s does not build; keeping index %s: %s",
                          state.get("Index"), self.index, exc)
                await asyncio.sleep(RETRY_MAX)
