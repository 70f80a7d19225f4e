"""Consul's /v1/session routes: create, destroy, info, node, list, renew.

ACLs as Consul checks them: session:write on the session's node to create, destroy or
renew; session:read on the node to read one; lists drop sessions on nodes the token may
not read. Reads are blocking queries over the sessions prefix.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, block, json_response, read_json
from tether.api.compat import datacenter_dependency
from tether.control.server import ControlPlane
from tether.control.sessions import SESSIONS
from tether.core.acl import READ, WRITE
from tether.core.errors import InvalidInput
from tether.core.session import parse_session_request

#: Set by a client agent on what it forwards: the node it runs on (session defaults need it).
AGENT_NODE_HEADER = "x-tether-agent-node"


def session_router(cp: ControlPlane, default_node: str) -> APIRouter:
    """`default_node`: the node a session is created on when the body names none (the agent's)."""
    r = APIRouter(dependencies=[Depends(authorizer_dependency()), Depends(datacenter_dependency(cp.datacenter))])
    sessions = cp.sessions

    def of_node(session: dict) -> tuple[str, str]:
        return "session", session["Node"]

    @r.put("/v1/session/create", tags=["session"], **needs("session:write", on="the session's Node"))
    async def session_create(request: Request) -> Response:
        # A client agent forwards a create and names its node: a session's Node defaults to the agent's.
        node = request.headers.get(AGENT_NODE_HEADER) or default_node
        spec = parse_session_request(await read_json(request, required=False), node)
        if not spec.node:
            raise InvalidInput("Node: missing; this server runs no agent, so a session here must name its Node")
        request_acl(request).require("session", spec.node, WRITE)
        return json_response({"ID": await sessions.create(spec)})

    @r.put("/v1/session/destroy/{session_id}", tags=["session"], **needs("session:write", on="the session's Node"))
    async def session_destroy(request: Request, session_id: str) -> Response:
        found = sessions.get(session_id)
        request_acl(request).require("session", found.value["Node"] if found else "", WRITE)
        await sessions.destroy(session_id)
        return json_response(True)

    @r.put("/v1/session/renew/{session_id}", tags=["session"], **needs("session:write", on="the session's Node"))
    async def session_renew(request: Request, session_id: str) -> Response:
        found = sessions.get(session_id)
        request_acl(request).require("session", found.value["Node"] if found else "", WRITE)
        return json_response([await sessions.renew(session_id)])

    @r.get("/v1/session/info/{session_id}", tags=["session"], **needs("session:read", on="the session's Node"))
    async def session_info(request: Request, session_id: str) -> Response:
        index = await block(request, store=cp.store, prefixes=[SESSIONS])
        found = [s for s in sessions.list() if s["ID"] == session_id]
        request_acl(request).require("session", found[0]["Node"] if found else "", READ)
        return json_response(found, index=index)

    @r.get("/v1/session/node/{node}", tags=["session"], **needs("session:read", on="{node}"))
    async def session_node(request: Request, node: str) -> Response:
        request_acl(request).require("session", node, READ)
        index = await block(request, store=cp.store, prefixes=[SESSIONS])
        return json_response(sessions.list(node), index=index)

    @r.get("/v1/session/list", tags=["session"], **needs("session:read", filtered=True))
    async def session_list(request: Request) -> Response:
        index = await block(request, store=cp.store, prefixes=[SESSIONS])
        return json_response(request_acl(request).filter(sessions.list(), of_node), index=index)

    return r
