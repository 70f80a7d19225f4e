"""The agent's Connect CA routes, answered from its LeafCache (Consul's shapes).

    GET /v1/agent/connect/ca/roots              blocking: ?index= wakes on a roots change
    GET /v1/agent/connect/ca/leaf/{service}     blocking: ?index= wakes with the renewed leaf

These are what sidecar proxies and the SDK call. X-Consul-Index is the roots index of
the server's store for roots, and the leaf's ModifyIndex for a leaf. The leaf route asks
the same identity authorizer as the server's sign route (ACL `service:write` later).
"""

from __future__ import annotations

import random

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.agent.leafcache import LeafCache
from tether.api.common import authorizer_dependency, blocking_params, json_response, request_token
from tether.control.ca_api import IdentityAuthorizer, allow_any_identity


def connect_router(leaves: LeafCache) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])

    @r.get("/v1/agent/connect/ca/roots", tags=["agent"])
    async def agent_ca_roots(request: Request) -> Response:
        index, wait = blocking_params(request)
        doc, current = await leaves.wait_roots(index, _jittered(wait))
        return json_response(doc, index=current)

    @r.get("/v1/agent/connect/ca/leaf/{service}", tags=["agent"])
    async def agent_ca_leaf(request: Request, service: str) -> Response:
        authorize: IdentityAuthorizer = getattr(request.app.state, "identity_authorizer", allow_any_identity)
        await authorize(request, request_token(request), service)
        index, wait = blocking_params(request)
        leaf = await leaves.wait_leaf(service, index, _jittered(wait))
        # The body was encoded once when the leaf was issued: a cached answer costs no JSON work.
        return Response(leaf.body, media_type="application/json",
                        headers={"X-Consul-Index": str(leaf.index), "X-Consul-KnownLeader": "true",
                                 "X-Consul-LastContact": "0"})

    return r


def _jittered(wait: float) -> float:
    # Up to wait/16 of jitter spreads the wake-ups of many timed-out watchers (as Consul does).
    return wait + random.uniform(0, wait / 16)
