"""HTTP plumbing shared by the server's and the agent's API: errors, blocking queries,
JSON bodies and responses, and the authorizer every route passes through.

Errors are translated here, once, by table (STYLE.md point 6). Error bodies are one line
of plain text, as Consul's are, so existing clients show them as they are.
"""

from __future__ import annotations

import json
import random
from typing import Any, Awaitable, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match

from tether.core.duration import parse_duration
from tether.core.errors import (
    AclDisabled, Conflict, InvalidInput, NotFound, PermissionDenied, RateLimited, TetherError, TooLarge, Unavailable,
)
from tether.core.nesting import check_json_depth
from tether.core.utf8 import check_json_text
from tether.store.base import Store

STATUS = {
    AclDisabled: 401,
    InvalidInput: 400,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    RateLimited: 429,
    Unavailable: 503,
}

DEFAULT_WAIT = 300.0  # Consul: wait defaults to 5m ...
MAX_WAIT = 600.0  # ... and is capped at 10m
MAX_BODY = 1024 * 1024 + 64 * 1024  # the largest body any route takes (KV's 512 KiB, plus slack)


def status_of(exc: TetherError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def install_error_handlers(app: FastAPI) -> None:
    async def tether_error(_: Request, exc: TetherError) -> Response:
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return PlainTextResponse(_printable(exc.message), status_code=status_of(exc), headers=headers)

    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("query", "path", "body"))
        return PlainTextResponse(f"{where}: {first['msg']}", status_code=400)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: Allow names the methods the path takes
            headers["Allow"] = allowed_methods(request)
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=headers)

    app.add_exception_handler(TetherError, tether_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def allowed_methods(request: Request) -> str:
    """Every method some route takes on this path. Starlette's own Allow lists only the first
    route whose path matched, and one path is often served by several (GET and PUT apart)."""
    from tether.api.acl import flat_routes

    methods: set[str] = set()
    for route in flat_routes(request.app.routes):
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method not
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _printable(message: str) -> str:
    """An error line that can be sent: messages quote the input, which may hold a lone
    surrogate (from a YAML or JSON escape) that UTF-8 cannot encode."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def json_response(data: Any, *, index: int | None = None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    out = dict(headers or {})
    if index is not None:
        out["X-Consul-Index"] = str(index)
        out["X-Consul-KnownLeader"] = "true"
        out["X-Consul-LastContact"] = "0"
    body = json.dumps(data, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json", headers=out)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes")
    return body


def parse_json(body: bytes) -> Any:
    """A request body's JSON: nesting past the limit and malformed JSON are 400s."""
    check_json_depth(body)  # before parsing: the parser recurses once per level
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"Request decode failed: malformed JSON: {exc}") from exc
    check_json_text(body, value)
    return value


async def read_json(request: Request, *, required: bool = True) -> Any:
    body = await read_body(request)
    if not body.strip():
        if required:
            raise InvalidInput("Request decode failed: the body is empty; send a JSON object")
        return None
    return parse_json(body)


def flag(request: Request, name: str) -> bool:
    """Consul's boolean query flags: present means true unless it says false/0."""
    if name not in request.query_params:
        return False
    return request.query_params[name].lower() not in ("false", "0", "no")


def int_param(request: Request, name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise InvalidInput(f"{name}: must be at least {minimum}, got {value}")
    return value


def refuse_unsupported(request: Request) -> None:
    """Query features Tether does not implement are refused, never silently ignored."""
    if "filter" in request.query_params:
        raise InvalidInput("filter: filter expressions are not supported by Tether yet; filter the result yourself")


def blocking_params(request: Request) -> tuple[int, float]:
    """(index, wait seconds) of a blocking query; index 0 means "do not block"."""
    refuse_unsupported(request)
    index = int_param(request, "index", 0) or 0
    raw_wait = request.query_params.get("wait")
    wait = parse_duration(raw_wait, field="wait") if raw_wait else DEFAULT_WAIT
    if wait < 0:
        raise InvalidInput(f"wait: must not be negative, got {raw_wait!r}")
    return index, min(wait, MAX_WAIT)


async def block(request: Request, store: Store, prefixes: Iterable[str]) -> int:
    """Wait as the query asks, then return the index of `prefixes` for X-Consul-Index."""
    prefixes = tuple(prefixes)
    index, wait = blocking_params(request)
    if index > 0:
        # Jitter of up to wait/16 spreads the wake-ups of many timed-out watchers (Consul does too).
        await store.wait(prefixes, index, wait + random.uniform(0, wait / 16))
    return store.index(prefixes)


# -- the authorizer hook ----------------------------------------------------------------

def request_token(request: Request) -> str | None:
    """The ACL token, from the places Consul accepts it. Never log it."""
    token = request.headers.get("x-consul-token") or request.headers.get("x-tether-token")
    auth = request.headers.get("authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    return token or request.query_params.get("token") or None


def authorizer_dependency() -> Callable[[Request], Awaitable[None]]:
    """Every router's dependency: resolve the request's token once (api/acl.py)."""
    from tether.api.acl import resolve_request

    async def check(request: Request) -> None:
        await resolve_request(request, request_token(request))

    return check
