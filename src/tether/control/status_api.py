"""The server set as Consul reports it: /v1/status/leader, /v1/status/peers and
/v1/operator/raft/configuration.

Tether servers have no Raft of their own: on one store (SQLite) the server is its own
leader; on etcd the "leader" is the server elected for the singleton work
(store/etcd_election.py) and the peers are the servers whose lease is alive. Addresses
are the HTTP addresses the servers announced (host:port, as Consul's answers look).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import PlainTextResponse, Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, json_response
from tether.control.server import ControlPlane
from tether.core.errors import TetherError


def _own(request: Request) -> str:
    return f"{request.url.hostname}:{request.url.port}"


def leader_address(cp: ControlPlane, request: Request) -> str:
    """The elected server's address; "" while there is none (as Consul answers without a leader)."""
    lead = cp.leadership
    if not lead.shared:
        return _own(request)
    leader = lead.leader_id()
    return lead.servers().get(leader, "") if leader else ""


def peer_addresses(cp: ControlPlane, request: Request) -> list[str]:
    if not cp.leadership.shared:
        return [_own(request)]
    return sorted(addr for addr in cp.leadership.servers().values() if addr)


def status_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])

    @r.get("/v1/operator/raft/configuration", tags=["operator"], **needs("operator:read"))
    async def raft_configuration(request: Request) -> Response:
        request_acl(request).require("operator", "", "read")
        lead = cp.leadership
        servers = lead.servers() if lead.shared else {"self": _own(request)}
        leader = lead.leader_id() if lead.shared else "self"
        out = [{"ID": sid, "Node": sid, "Address": addr, "Leader": sid == leader, "Voter": True,
                "ProtocolVersion": "3"} for sid, addr in sorted(servers.items())]
        body: dict = {"Servers": out, "Index": cp.store.index("servers/")}
        if lead.shared:  # Tether's own addition: the etcd members under the servers, with their health
            try:
                body["EtcdMembers"] = await cp.store.conn.members()  # type: ignore[attr-defined]
            except TetherError as exc:
                body["EtcdMembers"], body["EtcdError"] = [], str(exc)
        return json_response(body)

    return r


class StoreTruth:
    """ASGI middleware for servers on a shared store (etcd):

    - `?consistent` reads wait until this server's view has caught up with a quorum read
      of etcd (a 503 naming the cause when etcd cannot answer one);
    - X-Consul-KnownLeader says false while etcd reports no leader (quorum lost), and
      X-Consul-LastContact how long ago etcd last answered: reads are then served from
      this server's last view (stale)."""

    def __init__(self, app, store) -> None:  # type: ignore[no-untyped-def]
        self.app, self.store = app, store

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("method") == "GET" and b"consistent" in _query_keys(scope.get("query_string", b"")):
            try:
                await self.store.sync()
            except TetherError as exc:
                return await PlainTextResponse(f"?consistent: {exc}", status_code=503)(scope, receive, send)

        async def send_truth(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start" and not self.store.known_leader:
                contact = str(self.store.conn.last_contact_ms).encode()
                message = {**message, "headers": [
                    (k, b"false" if k == b"x-consul-knownleader" else contact if k == b"x-consul-lastcontact" else v)
                    for k, v in message.get("headers", [])]}
            await send(message)

        await self.app(scope, receive, send_truth)


def _query_keys(query: bytes) -> set[bytes]:
    return {part.split(b"=", 1)[0] for part in query.split(b"&") if part}
