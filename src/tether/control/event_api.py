"""Consul's user events: `PUT /v1/event/fire/:name`, `GET /v1/event/list` (blocking).

Consul gossips events to every agent, which keeps the last 256 it saw. Tether keeps the
last MAX_EVENTS in a ring in the store (`events/<ltime>`, written with the counter in one
compare-and-set transaction), so every agent lists the same events. The node, service
and tag filters of `fire` choose which agents receive an event in Consul; Tether has no
per-agent delivery, so they are refused (400) rather than accepted and ignored.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, block, json_response, read_body
from tether.api.compat import datacenter_dependency
from tether.control.kv import encode_value
from tether.control.server import ControlPlane
from tether.core.acl import WRITE
from tether.core.errors import Conflict, InvalidInput, TooLarge
from tether.store.base import Check, Delete, Put, Store

EVENTS = "events/"
LTIME = "meta/event-ltime"
MAX_EVENTS = 256  # what a Consul agent keeps
MAX_PAYLOAD = 512  # Consul's user event size limit, in bytes
_ATTEMPTS = 8


async def fire_event(store: Store, name: str, payload: bytes) -> dict[str, Any]:
    """Append an event to the ring (dropping the oldest past MAX_EVENTS); return it."""
    for _ in range(_ATTEMPTS):
        counter = store.get(LTIME)
        ltime = (counter.value["LTime"] if counter else 0) + 1
        event = {"ID": str(uuid.uuid4()), "Name": name, "Payload": encode_value(payload), "NodeFilter": "",
                 "ServiceFilter": "", "TagFilter": "", "Version": 1, "LTime": ltime}
        ops: list[Any] = [Put(f"{EVENTS}{ltime:020d}", event), Put(LTIME, {"LTime": ltime})]
        ring = store.list(EVENTS)
        ops += [Delete(e.key) for e in ring[: max(0, len(ring) + 1 - MAX_EVENTS)]]
        try:
            await store.commit(ops, [Check(LTIME, counter.modify_index if counter else 0)])
        except Conflict:
            continue
        return event
    raise Conflict("the event ring kept changing under concurrent fires; try again")


def event_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency()), Depends(datacenter_dependency(cp.datacenter))])

    @r.put("/v1/event/fire/{name}", tags=["event"], **needs("event:write", on="{name}"))
    async def event_fire(request: Request, name: str) -> Response:
        request_acl(request).require("event", name, WRITE)
        for unsupported in ("node", "service", "tag"):
            if request.query_params.get(unsupported):
                raise InvalidInput(f"{unsupported}: event filters are not supported by Tether (every agent lists "
                                   "every event); filter on the receiving side")
        payload = await read_body(request, limit=MAX_PAYLOAD + 1)
        if len(payload) > MAX_PAYLOAD:
            raise TooLarge(f"User event exceeds configured limit: {MAX_PAYLOAD} bytes")
        event = await fire_event(cp.store, name, payload)
        return json_response({**event, "LTime": 0})  # Consul answers before the event has its Lamport time

    @r.get("/v1/event/list", tags=["event"], **needs("event:read", filtered=True))
    async def event_list(request: Request) -> Response:
        index = await block(request, cp.store, [EVENTS])
        name = request.query_params.get("name", "")
        events = [e.value for e in cp.store.list(EVENTS) if not name or e.value["Name"] == name]
        return json_response(request_acl(request).filter(events, lambda e: ("event", e["Name"])), index=index)

    return r
