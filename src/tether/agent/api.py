"""The agent's HTTP API: /v1/agent/* answered locally, everything else forwarded.

Applications and proxies only ever talk to their local agent (as with Consul). In dev
mode the server's routes are mounted in the same app, so nothing is forwarded; on a
client node, catalog/health/KV/connect requests are streamed to the server unchanged,
blocking queries included.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Awaitable, Callable

import httpx
from fastapi import APIRouter, Depends, Request
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from tether import __version__
from tether.agent.acl import AgentTokens
from tether.agent.agent import Agent
from tether.api.acl import needs, request_acl
from tether.api.common import (
    authorizer_dependency, blocking_params, flag, json_response, read_body, read_json, refuse_unsupported,
    request_token,
)
from tether.control import views
from tether.core.errors import InvalidInput, NotFound, Unavailable
from tether.core.health import CRITICAL, PASSING, WARNING, http_status_for, worst
from tether.core.service import parse_check_definition, parse_service_definition

_TOKEN_HEADERS = {"x-consul-token", "x-tether-token", "authorization"}
MEMBER_ALIVE, MEMBER_FAILED = 1, 4  # Serf's member status codes, which Consul's API exposes


def content_hash(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def agent_router(agent: Agent, *, is_server: bool, tokens: AgentTokens | None = None,
                 effective_secret: Callable[[str | None], str | None] = lambda s: s) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])
    node = agent.config.node

    def may_service(request: Request, service_id: str, access: str) -> dict[str, Any]:
        """The local service `service_id`, if the token may `access` it (404 when unknown)."""
        svc = agent.services.get(service_id)
        if svc is None:
            raise NotFound(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                           "not the service name.")
        request_acl(request).require("service", svc["Service"], access)
        return svc

    def may_check(request: Request, check_id: str) -> None:
        """service:write on the check's service, node:write on this node for a node check."""
        check = agent.checks.get(check_id)
        if check is None:
            raise NotFound(f"Unknown check ID {check_id!r}")
        if check["ServiceID"]:
            request_acl(request).require("service", check["ServiceName"], "write")
        else:
            request_acl(request).require("node", node, "write")

    def may_register(request: Request) -> Callable[[list[dict[str, Any]]], None]:
        def check(services: list[dict[str, Any]]) -> None:
            for svc in services:
                request_acl(request).require("service", svc["Service"], "write")
                destination = (svc.get("Proxy") or {}).get("DestinationServiceName")
                if svc.get("Kind") == "connect-proxy" and destination:
                    request_acl(request).require("service", destination, "write")
        return check

    @r.get("/v1/agent/self", tags=["agent"], **needs("agent:read", on="this node"))
    async def agent_self(request: Request) -> Response:
        request_acl(request).require("agent", node, "read")
        c = agent.config
        return json_response({
            "Config": {"Datacenter": c.datacenter, "NodeName": c.node, "NodeID": c.node_id,
                       "Server": is_server, "Version": __version__, "Revision": "tether",
                       "DNSAddr": getattr(request.app.state, "dns_addr", "")},
            "Member": {"Name": c.node, "Addr": c.advertise, "Status": MEMBER_ALIVE},
            "Meta": c.node_meta,
        })

    @r.get("/v1/agent/members", tags=["agent"], **needs("node:read", filtered=True))
    async def agent_members(request: Request) -> Response:
        return json_response(request_acl(request).filter(await members(agent), lambda m: ("node", m["Name"])))

    @r.get("/v1/agent/services", tags=["agent"], **needs("service:read", filtered=True))
    async def agent_services(request: Request) -> Response:
        refuse_unsupported(request)
        kept = request_acl(request).filter(agent.services.items(), lambda item: ("service", item[1]["Service"]))
        return json_response({sid: views.agent_service(s) for sid, s in kept})

    @r.get("/v1/agent/service/{service_id}", tags=["agent"], **needs("service:read", on="the service"))
    async def agent_service(request: Request, service_id: str) -> Response:
        """Hash-blocking: ?hash=<ContentHash>&wait=30s returns when the definition changes."""
        if service_id in agent.services:
            may_service(request, service_id, "read")
        wanted = request.query_params.get("hash")
        if wanted:
            _, wait = blocking_params(request)
            deadline = time.monotonic() + wait
            while _service_hash(agent, service_id) == wanted and time.monotonic() < deadline:
                await agent.wait_for_change(deadline - time.monotonic())
        svc = agent.services.get(service_id)
        if svc is None:
            raise NotFound(f"unknown service ID {service_id!r}")
        doc = views.agent_service(svc)
        digest = content_hash(doc)
        return json_response({**doc, "ContentHash": digest}, headers={"X-Consul-ContentHash": digest})

    @r.put("/v1/agent/service/register", tags=["agent"],
           **needs("service:write", on="the service, its sidecar and a proxy's destination"))
    async def agent_service_register(request: Request) -> Response:
        definition = parse_service_definition(await read_json(request))
        await agent.register_service(definition, replace_existing_checks=flag(request, "replace-existing-checks"),
                                     token=effective_secret(request_token(request)) or "",
                                     authorize=may_register(request))
        return Response(status_code=200)

    @r.put("/v1/agent/service/deregister/{service_id}", tags=["agent"], **needs("service:write", on="the service"))
    async def agent_service_deregister(request: Request, service_id: str) -> Response:
        may_service(request, service_id, "write")
        await agent.deregister_service(service_id)
        return Response(status_code=200)

    @r.get("/v1/agent/checks", tags=["agent"], **needs("service:read", on="node:read for node checks", filtered=True))
    async def agent_checks(request: Request) -> Response:
        refuse_unsupported(request)
        kept = request_acl(request).filter(
            agent.checks.items(),
            lambda item: ("service", item[1]["ServiceName"]) if item[1]["ServiceID"] else ("node", node))
        return json_response(dict(kept))

    @r.put("/v1/agent/check/register", tags=["agent"],
           **needs("service:write", on="the check's service; node:write for a node check"))
    async def agent_check_register(request: Request) -> Response:
        definition = parse_check_definition(await read_json(request))
        if definition.ServiceID:
            may_service(request, definition.ServiceID, "write")
        else:
            request_acl(request).require("node", node, "write")
        await agent.register_check(definition)
        return Response(status_code=200)

    @r.put("/v1/agent/check/deregister/{check_id}", tags=["agent"],
           **needs("service:write", on="the check's service; node:write for a node check"))
    async def agent_check_deregister(request: Request, check_id: str) -> Response:
        may_check(request, check_id)
        await agent.deregister_check(check_id)
        return Response(status_code=200)

    def ttl_update_to(status: str) -> Callable[..., Awaitable[Response]]:
        # A closure, not a default argument: FastAPI would publish `_status=` as a query
        # parameter, and /pass?_status=critical failed the check.
        async def ttl_update(request: Request, check_id: str) -> Response:
            may_check(request, check_id)
            await agent.update_ttl(check_id, status, request.query_params.get("note", ""))
            return Response(status_code=200)

        return ttl_update

    for verb, status in (("pass", PASSING), ("warn", WARNING), ("fail", CRITICAL)):
        r.add_api_route(f"/v1/agent/check/{verb}/{{check_id}}", ttl_update_to(status), methods=["PUT"], tags=["agent"],
                        name=f"agent_check_{verb}",
                        **needs("service:write", on="the check's service; node:write for a node check"))

    @r.put("/v1/agent/check/update/{check_id}", tags=["agent"],
           **needs("service:write", on="the check's service; node:write for a node check"))
    async def agent_check_update(request: Request, check_id: str) -> Response:
        may_check(request, check_id)
        body = await read_json(request)
        if not isinstance(body, dict) or "Status" not in body:
            raise InvalidInput('Status: missing; send {"Status": "passing|warning|critical", "Output": "..."}')
        await agent.update_ttl(check_id, body["Status"], str(body.get("Output", "")))
        return Response(status_code=200)

    @r.get("/v1/agent/health/service/id/{service_id}", tags=["agent"], **needs("service:read", on="the service"))
    async def agent_health_by_id(request: Request, service_id: str) -> Response:
        svc = agent.services.get(service_id)
        if svc is None:
            return PlainTextResponse(f"ServiceId {service_id} not found", status_code=404)
        request_acl(request).require("service", svc["Service"], "read")
        status = agent.service_status(service_id)
        if request.query_params.get("format") == "text":
            return PlainTextResponse(status, status_code=http_status_for(status))
        body = {"AggregatedStatus": status, "Service": views.agent_service(svc),
                "Checks": [c for c in agent.checks.values() if c["ServiceID"] == service_id]}
        return json_response(body, status=http_status_for(status))

    @r.get("/v1/agent/health/service/name/{name}", tags=["agent"], **needs("service:read", on="{name}"))
    async def agent_health_by_name(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, "read")
        found = [s for s in agent.services.values() if s["Service"] == name]
        if not found:
            return PlainTextResponse(f"ServiceName {name} Not Found", status_code=404)
        entries = [{"AggregatedStatus": agent.service_status(s["ID"]), "Service": views.agent_service(s),
                    "Checks": [c for c in agent.checks.values() if c["ServiceID"] == s["ID"]]} for s in found]
        status = worst(e["AggregatedStatus"] for e in entries)
        if request.query_params.get("format") == "text":
            return PlainTextResponse(status, status_code=http_status_for(status))
        return json_response(entries, status=http_status_for(status))

    @r.put("/v1/agent/token/{kind}", tags=["agent"], **needs("acl:write"))
    async def agent_token(request: Request, kind: str) -> Response:
        """Set one of the agent's own tokens (Consul's `consul acl set-agent-token`)."""
        request_acl(request).require("acl", "", "write")
        if tokens is None:
            raise InvalidInput("this agent has no ACL configuration (acl.enabled is off)")
        body = await read_json(request)
        if not isinstance(body, dict) or set(body) - {"Token"} or not isinstance(body.get("Token", ""), str):
            raise InvalidInput('Request decode failed: send {"Token": "<secret>"}')
        tokens.set(kind, body.get("Token", ""))
        return Response(status_code=200)

    return r


def _service_hash(agent: Agent, service_id: str) -> str | None:
    svc = agent.services.get(service_id)
    return content_hash(views.agent_service(svc)) if svc else None


async def members(agent: Agent) -> list[dict[str, Any]]:
    """Nodes with their liveness, from the catalog's serfHealth checks."""
    return [
        {"Name": node["Node"], "Addr": node["Address"], "Port": 0,
         "Tags": {"dc": node.get("Datacenter", ""), "id": node.get("ID", "")},
         "Status": MEMBER_ALIVE if status == PASSING else MEMBER_FAILED}
        for node, status in await agent.link.node_health()
    ]


def forward_router(server_url: str, effective_secret: Callable[[str | None], str | None] = lambda s: s) -> APIRouter:
    """Client-agent mode: stream every non-agent /v1 request to the server.

    The token goes with it as the server must see it: a sidecar's proxy secret becomes its
    service's registration token, and a request without one carries the agent's default
    token (`effective_secret`); the server then decides, as for any client."""
    client = httpx.AsyncClient(base_url=server_url.rstrip("/"), timeout=httpx.Timeout(None, connect=5.0))
    r = APIRouter()
    # Not forwarded: hop-by-hop headers, and Origin, which this agent has checked against its own
    # names (api/guard.py); the server would judge it against the address the agent dialled.
    hop_by_hop = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}
    checked_here = {"origin"}

    @r.api_route("/v1/{path:path}", methods=["GET", "PUT", "POST", "DELETE"], include_in_schema=False)
    async def forward(request: Request, path: str) -> Response:
        if path.startswith("agent/"):
            raise NotFound(f"unknown agent endpoint /v1/{path}")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop_by_hop | checked_here | _TOKEN_HEADERS]
        secret = effective_secret(request_token(request))
        if secret:
            headers.append(("X-Consul-Token", secret))
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        upstream = client.build_request(request.method, f"/v1/{path}", params=params,
                                        headers=headers, content=await read_body(request))
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the Tether server at {server_url}: {exc}") from exc
        out_headers = {k: v for k, v in response.headers.items() if k.lower() not in hop_by_hop}
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code, headers=out_headers,
                                 background=BackgroundTask(response.aclose))

    return r
