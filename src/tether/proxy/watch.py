"""Blocking-query watch loops against the local agent, with fail-static bookkeeping.

`watch_index` follows an index-blocking endpoint (`?index=N&wait=`) and calls `apply(body)`
whenever the index moves; `watch_hash` does the same for a hash-blocking endpoint
(`?hash=H&wait=`, the agent's service definition). Both never return on their own: a
failed request is reported to `SourceHealth` and retried with back-off; a body that
`apply` refuses (InvalidInput and friends) is logged and the current config stays.

`SourceHealth` turns many watches' successes and failures into the engine's two calls:
`config_source_failed` when the first watch starts failing (logged once by the engine),
`config_source_ok` when none is failing any more.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from tether.core.errors import NotFound, PermissionDenied, TetherError
from tether.proxy.agentclient import AgentClient

log = logging.getLogger("tether.proxy.sidecar")

#: Seconds a blocking query waits on the agent before answering "unchanged" (Consul's
#: default is 5 minutes; shorter keeps half-open connections to a dead agent short-lived).
WATCH_WAIT = 60.0
#: First retry delay after a failed request; doubles up to RETRY_MAX.
RETRY_START = 0.25
RETRY_MAX = 5.0
#: Cancellation rounds for the watch tasks at shutdown, and the wait after each.
STOP_CANCEL_ROUNDS = 5
STOP_CANCEL_WAIT = 0.2

Apply = Callable[[Any], Awaitable[None] | None]


class SourceHealth:
    """Which watches are failing now; tells the engine when the agent is lost and regained."""

    def __init__(self, name: str, failed: Callable[[str, str], None], ok: Callable[[str], None]) -> None:
        self.name = name
        self._failed_cb = failed
        self._ok_cb = ok
        self.failing: dict[str, str] = {}

    def failed(self, watch: str, error: str, *, refused: bool = False) -> None:
        previous = self.failing.get(watch)
        if refused and error != previous:  # an ACL refusal: the operator must act; say what happens meanwhile
            log.warning("watch %s refused: %s; serving the last known config until this proxy's token is "
                        "allowed (docs/acl.md)", watch, error)
        elif previous is None:
            log.debug("watch %s failing: %s", watch, error)
        self.failing[watch] = error
        self._failed_cb(self.name, error)

    def ok(self, watch: str) -> None:
        if self.failing.pop(watch, None) is not None and not self.failing:
            self._ok_cb(self.name)


async def _apply(what: str, apply: Apply, body: Any) -> None:
    try:
        result = apply(body)
        if asyncio.iscoroutine(result):
            await result
    except (TetherError, OSError, ValueError, KeyError, TypeError) as e:
        log.error("%s: cannot apply the agent's answer (%s); keeping the current config", what, e)


Sleep = Callable[[float], Awaitable[None]]


async def watch_index(client: AgentClient, health: SourceHealth, what: str, path: str, apply: Apply, *,
                      index: int = 0, params: Mapping[str, Any] | None = None, wait: float = WATCH_WAIT,
                      sleep: Sleep = asyncio.sleep) -> None:
    """Follow `path` from `index` forever, calling `apply(body)` on every new index. `sleep`
    is the back-off's timer (tests pass their own)."""
    delay = RETRY_START
    failing = False
    while True:
        # After a failure, ask without blocking: the first answer proves the agent is back
        # (a blocking query on an unchanged index would hide that for a whole `wait`).
        blocking = bool(index) and not failing
        query = {**(params or {}), **({"index": index, "wait": f"{wait:g}s"} if blocking else {})}
        try:
            reply = await client.get(path, query, wait=wait if blocking else 0.0)
        except TetherError as e:
            failing = True
            health.failed(what, str(e), refused=isinstance(e, PermissionDenied))
            await sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        delay, failing = RETRY_START, False
        health.ok(what)
        new = reply.index
        if new and new == index:
            continue  # the wait ran out (or the agent is back with nothing new)
        # An index that goes backwards (a restarted agent, a restored store) means "start
        # over": apply what we got and block from there (Consul's client rule).
        index = new if new > 0 else 0
        await _apply(what, apply, reply.body)
        if not index:
            await asyncio.sleep(RETRY_MAX)  # an endpoint without an index: poll gently


async def watch_hash(client: AgentClient, health: SourceHealth, what: str, path: str, apply: Apply, *,
                     content_hash: str, wait: float = WATCH_WAIT, gone: Callable[[], None] | None = None,
                     sleep: Sleep = asyncio.sleep) -> None:
    """Follow a hash-blocking endpoint (the agent's service definition) until the agent says
    it is gone (404: `gone()` is called and the watch ends; without `gone`, retried)."""
    delay = RETRY_START
    failing = False
    while True:
        query = {"hash": content_hash, "wait": f"{wait:g}s"} if not failing else {}
        try:
            reply = await client.get(path, query, wait=0.0 if failing else wait)
        except TetherError as e:
            if gone is not None and isinstance(e, NotFound):
                health.ok(what)  # the agent answered: it is there, the registration is not
                return gone()
            failing = True
            health.failed(what, str(e), refused=isinstance(e, PermissionDenied))
            await sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        delay, failing = RETRY_START, False
        health.ok(what)
        new = (reply.body or {}).get("ContentHash") or reply.headers.get("x-consul-contenthash", "")
        if new == content_hash:
            continue
        content_hash = new
        await _apply(what, apply, reply.body)


async def cancel_watches(tasks: list[asyncio.Task]) -> None:
    """Cancel the watch tasks and wait for them, briefly. Cancelling again matters: on
    Python 3.11 `asyncio.wait_for` can swallow a cancellation that lands as its inner
    call finishes (a refused connect to a dead agent finishes at once), and the loop
    goes on; the next cancel hits its next await. Shutdown never waits on them for long."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(STOP_CANCEL_ROUNDS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_CANCEL_WAIT)
    if pending:
        log.warning("%d watch task(s) did not stop; shutting down anyway", len(pending))
