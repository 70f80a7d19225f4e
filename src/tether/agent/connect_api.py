"""The agent's Connect CA routes, answered from its LeafCache (Consul's shapes).

    GET /v1/agent/connect/ca/roots              blocking: ?index= wakes on a roots change
    GET /v1/agent/connect/ca/leaf/{service}     blocking: ?index= wakes with the renewed leaf

These are what sidecar proxies and the SDK call. X-Consul-Index is the roots index of
the server's store for roots, and the leaf's ModifyIndex for a leaf. A leaf is a
service's identity: the route needs `service:write` on the service (as the server's sign
route does), and the agent signs with the caller's token, so the server checks it too.
"""

from __future__ import annotations

import random
from typing import Callable

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.agent.leafcache import LeafCache
from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, blocking_params, json_response, request_token


def connect_router(leaves: LeafCache, effective_secret: Callable[[str | None], str | None] = lambda s: s) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])

    @r.get("/v1/agent/connect/ca/roots", tags=["agent"], **needs("none"))
    async def agent_ca_roots(request: Request) -> Response:
        index, wait = blocking_params(request)
        doc, current = await leaves.wait_roots(index, _jittered(wait))
        return json_response(doc, index=current)

    @r.get("/v1/agent/connect/ca/leaf/{service}", tags=["agent"], **needs("service:write", on="{service}"))
    async def agent_ca_leaf(request: Request, service: str) -> Response:
        request_acl(request).require("service", service, "write")
        index, wait = blocking_params(request)
        leaf = await leaves.wait_leaf(service, index, _jittered(wait), effective_secret(request_token(request)))
        # The body was encoded once when the leaf was issued: a cached answer costs no JSON work.
        return Response(leaf.body, media_type="application/json",
                        headers={"X-Consul-Index": str(leaf.index), "X-Consul-KnownLeader": "true",
                                 "X-Consul-LastContact": "0"})

    return r


def _jittered(wait: float) -> float:
    # Up to wait/16 of jitter spreads the wake-ups of many timed-out watchers (as Consul does).
    return wait + random.uniform(0, wait / 16)
