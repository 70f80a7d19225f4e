"""Consul's config entries, `/v1/config`: PUT (with `?cas=`), GET by kind or kind and name,
DELETE, for the kinds core/config_entry.py implements, each a view of Tether's own store.

- `service-intentions` is read from and written to the intentions store: a PUT makes the
  destination's intentions exactly the entry's sources (new ones created, changed ones
  replaced, missing ones deleted), after every source was validated, so a bad entry changes
  nothing. ACL: intentions:write (read) on the destination.
- `mesh` is the outbound policy's mode (`MeshDestinationsOnly`: REGISTRY_ONLY); its
  per-service overrides are kept. ACL: mesh:write (read), which falls back to operator.

`?cas=N` applies only when the entry's ModifyIndex is N (0: the entry does not exist).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import PlainTextResponse, Response

from tether.api.acl import INTENTION, needs, request_acl
from tether.api.common import authorizer_dependency, block, int_param, json_response, read_json
from tether.api.compat import datacenter_dependency
from tether.control.egress import POLICY as OUTBOUND_POLICY
from tether.control.intentions import INTENTIONS
from tether.control.server import ControlPlane
from tether.core.config_entry import (
    MESH, check_kind, format_mesh, format_service_intentions, parse_mesh, parse_service_intentions,
)
from tether.core.errors import InvalidInput
from tether.core.external import OutboundPolicy
from tether.core.external_model import OutboundMode
from tether.core.external_yaml import ExternalConfig
from tether.store.base import Delete

_ACL = {MESH: lambda name: ("mesh", "")}


def config_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency()), Depends(datacenter_dependency(cp.datacenter))])
    svc, egress, store = cp.intentions, cp.egress, cp.store

    def resource(kind: str, name: str) -> tuple[str, str]:
        return _ACL[kind](name) if kind in _ACL else (INTENTION, name)

    def entry(kind: str, name: str) -> dict[str, Any] | None:
        if kind == MESH:
            doc = store.get(OUTBOUND_POLICY)
            if name != MESH or doc is None:
                return None
            mode = (egress.current().policy or OutboundPolicy()).mode
            return format_mesh(mode == OutboundMode.REGISTRY_ONLY, doc.create_index, doc.modify_index)
        found = [i for i in svc.list() if i.destination_name == name]
        return format_service_intentions(name, found) if found else None

    def names(kind: str) -> list[str]:
        if kind == MESH:
            return [MESH] if store.get(OUTBOUND_POLICY) is not None else []
        return sorted({i.destination_name for i in svc.list()})

    def cas_holds(request: Request, kind: str, name: str) -> bool:
        cas = int_param(request, "cas")
        return cas is None or (entry(kind, name) or {}).get("ModifyIndex", 0) == cas

    async def set_mode(only: bool | None) -> None:
        """The outbound policy's mode (None: the mesh entry deleted), keeping its overrides."""
        current = egress.current().policy or OutboundPolicy()
        if only is None and not current.overrides:
            await store.commit([Delete(OUTBOUND_POLICY)])
            return
        mode = OutboundMode.REGISTRY_ONLY if only else OutboundMode.ALLOW_ANY
        await egress.apply(ExternalConfig(policy=OutboundPolicy(mode=mode, overrides=current.overrides)))

    @r.put("/v1/config", tags=["config"],
           **needs("intentions:write", on="the entry's Name for service-intentions; mesh:write for mesh"))
    async def config_put(request: Request) -> Response:
        body = await read_json(request)
        kind = next((v for k, v in body.items() if str(k).lower() == "kind"), None) if isinstance(body, dict) else None
        if not isinstance(kind, str):
            raise InvalidInput("Kind: missing")
        check_kind(kind)
        if kind == MESH:
            only = parse_mesh(body)
            request_acl(request).require("mesh", "", "write")
            if not cas_holds(request, kind, MESH):
                return json_response(False)
            await set_mode(only)
            return json_response(True)
        destination, intentions = parse_service_intentions(body)
        request_acl(request).require(INTENTION, destination, "write")
        if not cas_holds(request, kind, destination):
            return json_response(False)
        wanted = {i.source_name for i in intentions}
        for intention in intentions:
            await svc.upsert_exact(intention.source_name, destination, {
                "Action": intention.action, "Description": intention.description, "Meta": dict(intention.meta)})
        for stale in [i for i in svc.list() if i.destination_name == destination and i.source_name not in wanted]:
            await svc.delete_exact(stale.source_name, destination)
        return json_response(True)

    @r.get("/v1/config/{kind}", tags=["config"], **needs("intentions:read", on="mesh:read for mesh", filtered=True))
    async def config_list(request: Request, kind: str) -> Response:
        check_kind(kind)
        index = await block(request, store, [INTENTIONS, OUTBOUND_POLICY])
        kept = request_acl(request).filter(names(kind), lambda n: resource(kind, n))
        return json_response([entry(kind, n) for n in kept], index=index)

    @r.get("/v1/config/{kind}/{name}", tags=["config"], **needs("intentions:read", on="{name}; mesh:read for mesh"))
    async def config_get(request: Request, kind: str, name: str) -> Response:
        check_kind(kind)
        request_acl(request).require(*resource(kind, name), "read")
        index = await block(request, store, [INTENTIONS, OUTBOUND_POLICY])
        found = entry(kind, name)
        if found is None:
            return PlainTextResponse(f'Config entry not found for "{kind}" / "{name}"', status_code=404,
                                     headers={"X-Consul-Index": str(index)})
        return json_response(found, index=index)

    @r.delete("/v1/config/{kind}/{name}", tags=["config"],
              **needs("intentions:write", on="{name}; mesh:write for mesh"))
    async def config_delete(request: Request, kind: str, name: str) -> Response:
        check_kind(kind)
        request_acl(request).require(*resource(kind, name), "write")
        if not cas_holds(request, kind, name):
            return json_response(False)
        if kind == MESH:
            if entry(kind, name) is not None:
                await set_mode(None)
            return json_response(True)
        for intention in [i for i in svc.list() if i.destination_name == name]:
            await svc.delete_exact(intention.source_name, name)
        return json_response(True)

    return r
