"""ACL enforcement at the HTTP edge: the request's token, its Authorizer, and what a route needs.

Every router depends on `authorizer_dependency` (api/common.py), which resolves the
request's token once (X-Consul-Token, Authorization: Bearer, ?token=; none: the agent's
default token, else the anonymous token) through `app.state.acl` and keeps the result on
the request. A handler then asks for what it needs, where it knows the resource:

    request_acl(request).require("service", definition.Name, WRITE)
    kept = request_acl(request).filter(instances, lambda s: ("service", s["Service"]))

A failed resolution (an unknown, deleted or expired token) is raised at the first check,
so routes that need no permission (CA roots, status) never fail on it. A filtered list is
answered with `X-Consul-Results-Filtered-By-ACLs: true` (only to requests that presented a
token, as Consul does, so the anonymous caller learns nothing from it).

Each route declares its permission in its decorator (`**needs("service:read")`); the
declaration is what docs/api.md's ACL table lists, and tests/acl/test_route_table.py
calls every route anonymously under `default_policy = deny` to hold each declaration to
what the handler enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol, TypeVar

from fastapi import Request

from tether.core.acl import INTENTION, Authorizer, allow_everything, format_permission
from tether.core.errors import PermissionDenied, TetherError

T = TypeVar("T")
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
_SCOPE_KEY = "tether.acl"


class AclResolver(Protocol):
    """What the edge needs: secret (None: no token given) -> Authorizer, or raise."""

    async def resolve(self, secret: str | None) -> Authorizer: ...


@dataclass
class RequestAcl:
    authz: Authorizer | None
    authenticated: bool  # the request presented a token
    error: TetherError | None = None
    filtered: bool = False
    secret: str | None = field(default=None, repr=False)  # never logged

    def _authorizer(self) -> Authorizer:
        if self.authz is None:
            assert self.error is not None
            raise self.error
        return self.authz

    def accessor(self) -> str:
        """The token's AccessorID ("" with ACLs off)."""
        authz = self._authorizer()
        return "" if authz is _OPEN_AUTHZ else authz.accessor

    def require_valid(self) -> None:
        """Refuse a request whose token did not resolve (unknown, deleted, expired)."""
        self._authorizer()

    def allowed(self, resource: str, name: str, access: str) -> bool:
        return self._authorizer().allowed(resource, name, access)

    def require(self, resource: str, name: str, access: str) -> None:
        authz = self._authorizer()
        if not authz.allowed(resource, name, access):
            raise PermissionDenied(denied_message(authz.accessor, resource, access, name))

    def require_all(self, resource: str, access: str) -> None:
        """Every name of a resource (e.g. node:read on all nodes)."""
        authz = self._authorizer()
        if not authz.allowed_all(resource, access):
            raise PermissionDenied(denied_message(authz.accessor, resource, access, ""))

    def require_key_tree_write(self, prefix: str) -> None:
        """Deleting a KV tree: write on the prefix and on every rule under it (Consul's KeyWritePrefix)."""
        authz = self._authorizer()
        if not authz.allowed_key_prefix_write(prefix):
            raise PermissionDenied(denied_message(authz.accessor, "key", "write", prefix))

    def filter(self, items: Iterable[T], resource_of: Callable[[T], tuple[str, str]], access: str = "read") -> list[T]:
        """The items the token may `access` (resource_of(item) -> (resource, name))."""
        authz = self._authorizer()
        if authz.management:
            return list(items)
        kept = []
        for item in items:
            resource, name = resource_of(item)
            if authz.allowed(resource, name, access):
                kept.append(item)
            else:
                self.filtered = True
        return kept


def denied_message(accessor: str, resource: str, access: str, name: str) -> str:
    """Consul's wording: Permission denied: token with AccessorID 'x' lacks permission 'service:write' on "db"."""
    who = "anonymous token" if accessor == ANONYMOUS_ACCESSOR else f"token with AccessorID '{accessor}'"
    on = f' on "{name}"' if name else ""
    tail = (". The anonymous token is used implicitly when a request does not specify a token."
            if accessor == ANONYMOUS_ACCESSOR else "")
    return f"Permission denied: {who} lacks permission '{format_permission(resource, access)}'{on}{tail}"


#: ACLs off (no resolver installed): every request may do everything.
_OPEN_AUTHZ = allow_everything()


async def resolve_request(request: Request, token: str | None) -> RequestAcl:
    """Resolve once per request and keep it in the ASGI scope (the header middleware reads it)."""
    found = request.scope.get(_SCOPE_KEY)
    if found is not None:
        return found
    resolver: AclResolver | None = getattr(request.app.state, "acl", None)
    if resolver is None:
        acl = RequestAcl(_OPEN_AUTHZ, authenticated=bool(token))
    else:
        try:
            acl = RequestAcl(await resolver.resolve(token), authenticated=bool(token), secret=token)
        except TetherError as exc:  # e.g. "ACL not found": raised at the first check
            acl = RequestAcl(None, authenticated=bool(token), error=exc, secret=token)
    request.scope[_SCOPE_KEY] = acl
    return acl


def request_acl(request: Request) -> RequestAcl:
    """The request's resolved ACL (every router resolves it in its dependency)."""
    found = request.scope.get(_SCOPE_KEY)
    if found is not None:
        return found
    if getattr(request.app.state, "acl", None) is not None:  # fail closed: a route without the dependency
        raise RuntimeError(f"route {request.url.path} checks ACLs without resolving the request's token")
    return RequestAcl(_OPEN_AUTHZ, authenticated=False)


def needs(permission: str, *, on: str = "", filtered: bool = False) -> dict[str, Any]:
    """A route's declared permission, for the docs table and the route-table test.

    `permission` is Consul's `resource:access` ("service:write"), or "none" for routes that
    need none; `on` says which name it applies to; `filtered` marks lists that drop what
    the token may not read instead of refusing."""
    return {"openapi_extra": {"x-consul-acl": {"permission": permission, "on": on, "filtered": filtered}}}


class FilteredHeaderMiddleware:
    """Adds X-Consul-Results-Filtered-By-ACLs to answers whose lists were filtered."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                acl = scope.get(_SCOPE_KEY)
                if acl is not None and acl.filtered and acl.authenticated:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (FILTERED_HEADER.lower().encode(), b"true")]}
            await send(message)

        await self.app(scope, receive, send_with_header)


__all__ = ["RequestAcl", "needs", "request_acl", "resolve_request", "denied_message", "FilteredHeaderMiddleware",
           "INTENTION"]


def route_table(app: Any) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(methods, path, declaration or None) for every /v1 route of an app, sorted by path."""
    out = []
    for route in flat_routes(getattr(app, "routes", [])):
        path = getattr(route, "path", "")
        if not path.startswith("/v1/"):
            continue
        declared = (getattr(route, "openapi_extra", None) or {}).get("x-consul-acl")
        out.append((",".join(sorted(getattr(route, "methods", ()) or ())), path, declared))
    return sorted(out, key=lambda row: (row[1], row[0]))


def flat_routes(routes: Iterable[Any]) -> Iterable[Any]:
    """Routes of an app, through included routers (newer FastAPI keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def format_route_table(rows: list[tuple[str, str, dict[str, Any] | None]]) -> str:
    """The ACL table of docs/api.md: one row per route, as the routes declare it."""
    lines = ["| method | path | ACL needed |", "| --- | --- | --- |"]
    for methods, path, declared in rows:
        if declared is None:
            continue
        need = declared["permission"] + (f" ({declared['on']})" if declared["on"] else "")
        if declared["filtered"]:
            need += "; the list is filtered"
        lines.append(f"| {methods} | `{path}` | {need} |")
    return "\n".join(lines)
