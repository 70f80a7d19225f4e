"""Consul's config entries, `/v1/config`: PUT (with `?cas=`), GET by kind or kind and name,
DELETE, for the kinds core/config_entry.py implements.

`service-intentions` is read from and written to the intentions store: a PUT makes the
destination's intentions exactly the entry's sources (new ones created, changed ones
replaced, missing ones deleted), after every source was validated, so a bad entry changes
nothing. `?cas=N` applies only when the entry's ModifyIndex (the newest of its
intentions, 0 when it has none) is N. ACL: intentions:write (read) on the destination.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import PlainTextResponse, Response

from tether.api.acl import INTENTION, needs, request_acl
from tether.api.common import authorizer_dependency, block, int_param, json_response, read_json
from tether.api.compat import datacenter_dependency
from tether.control.intentions import INTENTIONS
from tether.control.server import ControlPlane
from tether.core.config_entry import check_kind, format_service_intentions, parse_service_intentions
from tether.core.errors import InvalidInput


def config_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency()), Depends(datacenter_dependency(cp.datacenter))])
    svc = cp.intentions

    def entry(destination: str) -> dict | None:
        found = [i for i in svc.list() if i.destination_name == destination]
        return format_service_intentions(destination, found) if found else None

    @r.put("/v1/config", tags=["config"], **needs("intentions:write", on="the entry's Name (service-intentions)"))
    async def config_put(request: Request) -> Response:
        body = await read_json(request)
        kind = next((v for k, v in body.items() if str(k).lower() == "kind"), None) if isinstance(body, dict) else None
        if not isinstance(kind, str):
            raise InvalidInput("Kind: missing")
        check_kind(kind)
        destination, intentions = parse_service_intentions(body)
        request_acl(request).require(INTENTION, destination, "write")
        cas = int_param(request, "cas")
        if cas is not None and (entry(destination) or {}).get("ModifyIndex", 0) != cas:
            return json_response(False)
        wanted = {i.source_name: i for i in intentions}
        for intention in intentions:
            await svc.upsert_exact(intention.source_name, destination, {
                "Action": intention.action, "Description": intention.description, "Meta": dict(intention.meta)})
        for stale in [i for i in svc.list() if i.destination_name == destination and i.source_name not in wanted]:
            await svc.delete_exact(stale.source_name, destination)
        return json_response(True)

    @r.get("/v1/config/{kind}", tags=["config"], **needs("intentions:read", filtered=True))
    async def config_list(request: Request, kind: str) -> Response:
        check_kind(kind)
        index = await block(request, cp.store, [INTENTIONS])
        names = sorted({i.destination_name for i in svc.list()})
        kept = request_acl(request).filter(names, lambda n: (INTENTION, n))
        return json_response([entry(n) for n in kept], index=index)

    @r.get("/v1/config/{kind}/{name}", tags=["config"], **needs("intentions:read", on="{name}"))
    async def config_get(request: Request, kind: str, name: str) -> Response:
        check_kind(kind)
        request_acl(request).require(INTENTION, name, "read")
        index = await block(request, cp.store, [INTENTIONS])
        found = entry(name)
        if found is None:
            return PlainTextResponse(f'Config entry not found for "{kind}" / "{name}"', status_code=404,
                                     headers={"X-Consul-Index": str(index)})
        return json_response(found, index=index)

    @r.delete("/v1/config/{kind}/{name}", tags=["config"], **needs("intentions:write", on="{name}"))
    async def config_delete(request: Request, kind: str, name: str) -> Response:
        check_kind(kind)
        request_acl(request).require(INTENTION, name, "write")
        cas = int_param(request, "cas")
        if cas is not None and (entry(name) or {}).get("ModifyIndex", 0) != cas:
            return json_response(False)
        for intention in [i for i in svc.list() if i.destination_name == name]:
            await svc.delete_exact(intention.source_name, name)
        return json_response(True)

    return r
