"""A request the server cuts short at shutdown is answered 503, never 500.

uvicorn gives open requests `timeout_graceful_shutdown` seconds, then cancels them; its
ASGI runner turns that cancellation into `500 Internal Server Error`. The requests still
open then are blocking queries (they wait for minutes by design), so every watcher of a
stopping agent saw a 500, as if the agent were broken. This wrapper answers them with what
happened: 503 and a line saying the agent is shutting down, which clients (the proxy's
watches among them) treat as "unavailable, retry", as for any other unreachable agent.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SHUTTING_DOWN = b"the agent is shutting down; retry once it is back (or use another agent)"


class AnswerCutRequests:
    """ASGI wrapper: a request cancelled before its response started gets a 503."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if started or task is None:
                raise  # half a response cannot be replaced: the server closes the connection
            task.uncancel()  # we are the last thing this request does; say why it ends
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(SHUTTING_DOWN)).encode()),
                (b"connection", b"close"), (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": SHUTTING_DOWN, "more_body": False})
