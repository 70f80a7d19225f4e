"""Refusals that happen before any route runs: a request target that is not UTF-8 text.

An ASGI wrapper rather than a dependency, so that nothing (routing, ACL resolution, body
reading) has looked at the request when it is refused. The decisions are pure
(core/utf8.py); this module only turns them into responses.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from tether.core.utf8 import target_problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_refusal(send: Send, status: int, reason: str) -> None:
    """A one-line plain-text error, as every other API error (api/common.py)."""
    body = reason.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI wrapper: a request whose path or query is not UTF-8 once decoded gets a 400."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = target_problem(scope.get("raw_path") or scope["path"].encode(), scope.get("query_string", b""))
            if problem:
                return await send_refusal(send, 400, problem)
        await self.app(scope, receive, send)
