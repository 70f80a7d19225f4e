"""Refusals that happen before any route runs: a browser page that is not ours (403,
core/browserguard.py) and a request target that is not UTF-8 text (400, core/utf8.py).

An ASGI wrapper rather than a dependency, so that nothing (routing, ACL resolution, body
reading, a handler's side effects) has happened when a request is refused. The decisions
are pure; this module only reads the headers and turns a refusal into a response.

Origins that the configuration allows (`http_config.allowed_origins`) also get CORS
answers (Starlette's CORSMiddleware), or a browser could send their requests but never
read the replies, nor send any request that needs a preflight (JSON bodies, tokens).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.middleware.cors import CORSMiddleware

from tether.core.browserguard import BrowserPolicy, decide_browser
from tether.core.utf8 import target_problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What a configured origin's page may send and read (Consul's headers).
CORS_HEADERS = ["content-type", "x-consul-token", "authorization"]
CORS_EXPOSED = ["X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact",
                "X-Consul-Results-Filtered-By-ACLs"]


async def send_refusal(send: Send, status: int, reason: str) -> None:
    """A one-line plain-text error, as every other API error (api/common.py)."""
    body = reason.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    """ASGI wrapper: 403 for a browser page that is not ours, 400 for a target that is not
    UTF-8; anything else goes on to the app (through CORS when origins are configured)."""

    def __init__(self, app: App, browser: BrowserPolicy | None = None) -> None:
        self.browser = browser or BrowserPolicy.build([], [])
        self.app: App = app
        if self.browser.origins:
            self.app = CORSMiddleware(app, allow_origins=sorted(self.browser.origins),
                                      allow_methods=["GET", "PUT", "POST", "DELETE"], allow_headers=CORS_HEADERS,
                                      expose_headers=CORS_EXPOSED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = decide_browser(self.browser, _header(scope, b"host"), _header(scope, b"origin"))
            if refusal:
                return await send_refusal(send, 403, refusal)
            problem = target_problem(scope.get("raw_path") or scope["path"].encode(), scope.get("query_string", b""))
            if problem:
                return await send_refusal(send, 400, problem)
        await self.app(scope, receive, send)
