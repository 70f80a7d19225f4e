"""Consul compatibility at the HTTP edge: datacenter and peer scoping, the PUT/POST pair
Consul's clients mix, and Consul's answers for the parts of its API Tether does not build.

Tether is one datacenter with no peers. A request for another datacenter (`?dc=dc2`, or
`"Datacenter": "dc2"` in a body) is answered as Consul answers for a datacenter it has no
route to (500 `No path to datacenter`), never served from, or written into, the local one.
A read for a peer (`?peer=x`) is answered with an empty result, as Consul answers for a
peer it does not know.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import Request
from starlette.responses import PlainTextResponse

from tether.api.common import FILTER_APPLIED
from tether.core.bexpr import parse_filter
from tether.core.errors import NoPathToDatacenter
from tether.store.base import Store


def require_local_datacenter(requested: str, local: str) -> None:
    if requested and requested != local:
        raise NoPathToDatacenter(requested)


def datacenter_dependency(local: str) -> Callable[[Request], Awaitable[None]]:
    """A router dependency: `?dc=` must name this datacenter (or be absent)."""

    async def check(request: Request) -> None:
        require_local_datacenter(request.query_params.get("dc", ""), local)

    return check


def request_filter(request: Request) -> Callable[[Any], bool]:
    """The route's `?filter=` as a predicate (everything passes without one). Call it before
    `block`, which refuses a filter no route took."""
    text = request.query_params.get("filter", "")
    request.scope[FILTER_APPLIED] = True
    if not text.strip():
        return lambda doc: True
    return parse_filter(text).matches


def for_peer(request: Request) -> bool:
    """True when the read asks for a cluster peer's data: Tether has none, so the answer is empty."""
    return bool(request.query_params.get("peer"))


class PutPostAlias:
    """Write routes answer both PUT and POST: Consul's documentation names one, its clients
    send either (py-consul PUTs /v1/agent/connect/authorize, documented as POST).

    A PUT or POST that the router answers 405 (the path exists, the method does not) is
    served again with the other method. Nothing else pays for it: the first answer is only
    held back when it is a 405, which the router gives before any handler reads the body."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _OTHER_WRITE:
            return await self.app(scope, receive, send)
        refused = False

        async def hold_a_405(message: dict[str, Any]) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 405:
                refused = True
            if not refused:
                await send(message)

        await self.app(scope, receive, hold_a_405)
        if refused:
            await self.app({**scope, "method": _OTHER_WRITE[scope["method"]]}, receive, send)


_OTHER_WRITE = {"PUT": "POST", "POST": "PUT"}


#: Consul routes Tether does not implement: (path prefix, status, Consul's answer or why not).
#: Coordinates are answered as a Consul agent with `disable_coordinates` answers; the rest with
#: 501 and the reason, so a client raises an error that says what is missing.
UNIMPLEMENTED: tuple[tuple[str, int, str], ...] = (
    ("coordinate", 401, "Coordinate support disabled"),
    ("agent/leave", 501, "Tether has no gossip membership to leave; deregister the node with /v1/catalog/deregister"),
    ("agent/force-leave", 501, "Tether has no gossip membership; deregister the node with /v1/catalog/deregister"),
    ("agent/join", 501, "Tether has no gossip membership: agents join by -server-addr"),
    ("agent/host", 501, "host information is not implemented by Tether"),
    ("agent/monitor", 501, "log streaming is not implemented by Tether; read the agent's output"),
    ("catalog/node-services", 501, "not implemented by Tether; use /v1/catalog/node/:node"),
    ("catalog/gateway-services", 501, "gateway services are not implemented by Tether"),
    ("health/ingress", 501, "ingress gateways are not implemented by Tether yet"),
    ("query", 501, "prepared queries are not implemented by Tether; resolve services with /v1/health/service"),
    ("operator/keyring", 501, "Tether has no gossip layer, so no gossip keyring"),
    ("operator/autopilot", 501, "Tether has no Raft: its servers share a store (SQLite or etcd)"),
    ("operator/raft", 501, "Tether has no Raft: its servers share a store (SQLite or etcd); "
                           "GET /v1/operator/raft/configuration lists them"),
    ("operator/usage", 501, "usage reporting is not implemented by Tether"),
    ("operator/area", 501, "network areas are a Consul Enterprise feature"),
    ("peering", 501, "cluster peering is not implemented by Tether yet"),
    ("namespaces", 501, "namespaces are a Consul Enterprise feature"),
    ("namespace", 501, "namespaces are a Consul Enterprise feature"),
    ("partitions", 501, "admin partitions are a Consul Enterprise feature"),
    ("partition", 501, "admin partitions are a Consul Enterprise feature"),
    ("discovery-chain", 501, "discovery chains (L7 routing) are not implemented by Tether"),
    ("internal/ui", 501, "the Consul UI's internal routes are not implemented by Tether"),
    ("exported-services", 501, "exported services come with Tether's multi-cluster work"),
    ("imported-services", 501, "imported services come with Tether's multi-cluster work"),
)


#: Paths under those prefixes that Tether does serve -> the methods still answered as
#: unimplemented there (any other method goes to the router: the route, or a 405).
SERVED: dict[str, tuple[str, ...]] = {"/v1/operator/raft/configuration": (), "/v1/snapshot": ()}


class UnimplementedRoutes:
    """Answers the paths of UNIMPLEMENTED with their status and reason, and with
    X-Consul-Index, which clients such as py-consul require on every read. They need no
    ACL (they reveal nothing) and are not routes, so the ACL table lists only real ones.
    A server's store gives the index; a client agent forwards them to its server."""

    def __init__(self, app: Callable[..., Awaitable[None]], store_of: Callable[[], Store | None]) -> None:
        self.app = app
        self.store_of = store_of

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        store = self.store_of() if scope["type"] == "http" else None
        path = scope["path"]
        served = path in SERVED and scope.get("method") not in SERVED[path]
        found = unimplemented(path) if store is not None and not served else None
        if found is None:
            return await self.app(scope, receive, send)
        status, reason = found
        response = PlainTextResponse(reason, status_code=status, headers={"X-Consul-Index": str(store.index(""))})
        await response(scope, receive, send)


def unimplemented(path: str) -> tuple[int, str] | None:
    """(status, reason) when `path` is a Consul route Tether does not implement."""
    for prefix, status, reason in UNIMPLEMENTED:
        base = f"/v1/{prefix}"
        if path == base or path.startswith(base + "/"):
            return status, reason
    return None
