"""The server's HTTP API: catalog, health, KV and the internal routes agents sync with.

Handlers are thin: parse parameters, call the control plane, shape the response. Every
read is a blocking query over exactly the store prefixes it depends on.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, block, flag, int_param, json_response, read_body, read_json
from tether.control import views
from tether.control.catalog import CHECKS, NODE_CHECKS, NODES, SERVICES, VIPS, Catalog
from tether.control.kv import format_pair, raw_value
from tether.control.server import ControlPlane
from tether.core.acl import READ, WRITE
from tether.core.errors import InvalidInput, NotFound
from tether.core.health import STATUSES
from tether.core.registration import format_check, format_service
from tether.core.service import parse_check_definition, parse_service_definition


def server_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])
    store, catalog, kv = cp.store, cp.catalog, cp.kv

    # -- catalog -------------------------------------------------------------------

    def node_of(doc: dict[str, Any]) -> tuple[str, str]:
        return "node", doc["Node"]

    def service_of(doc: dict[str, Any]) -> tuple[str, str]:
        return "service", doc["Service"]

    def readable_entries(request: Request, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Health entries whose node and service the token may read (Consul filters both)."""
        acl = request_acl(request)
        kept = acl.filter(entries, lambda e: ("node", e["Node"]["Node"]))
        return acl.filter(kept, lambda e: ("service", e["Service"]["Service"]))

    def readable_checks(request: Request, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        acl = request_acl(request)
        kept = acl.filter(checks, node_of)
        return acl.filter(kept, lambda c: ("service", c["ServiceName"]) if c["ServiceID"] else ("node", c["Node"]))

    @r.get("/v1/catalog/datacenters", tags=["catalog"], **needs("none"))
    async def datacenters() -> Response:
        return json_response([cp.datacenter])

    @r.get("/v1/catalog/services", tags=["catalog"], **needs("service:read", filtered=True))
    async def catalog_services(request: Request) -> Response:
        index = await block(request, store, [SERVICES])
        services = catalog.services()
        kept = request_acl(request).filter(services, lambda name: ("service", name))
        return json_response({name: services[name] for name in kept}, index=index)

    @r.get("/v1/catalog/service/{name}", tags=["catalog"], **needs("service:read", on="{name}; node:read filters"))
    async def catalog_service(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        index = await block(request, store, [f"{SERVICES}{name}/", NODES])
        tag = request.query_params.get("tag", "")
        instances = request_acl(request).filter(catalog.instances(name), node_of)
        out = [views.catalog_service(catalog.node(s["Node"]), s) for s in instances if not tag or tag in s["Tags"]]
        return json_response(out, index=index)

    @r.get("/v1/catalog/connect/{name}", tags=["catalog"], **needs("service:read", on="{name}; node:read filters"))
    async def catalog_connect(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        index = await block(request, store, [SERVICES, NODES])
        instances = request_acl(request).filter(catalog.connect_instances(name), node_of)
        out = [views.catalog_service(catalog.node(s["Node"]), s) for s in instances]
        return json_response(out, index=index)

    @r.get("/v1/catalog/nodes", tags=["catalog"], **needs("node:read", filtered=True))
    async def catalog_nodes(request: Request) -> Response:
        index = await block(request, store, [NODES])
        return json_response(request_acl(request).filter(catalog.nodes(), node_of), index=index)

    @r.get("/v1/catalog/node/{node}", tags=["catalog"], **needs("node:read", on="{node}; service:read filters"))
    async def catalog_node(request: Request, node: str) -> Response:
        request_acl(request).require("node", node, READ)
        index = await block(request, store, [f"{NODES}{node}", SERVICES])
        found = catalog.node(node)
        if found is None:
            return json_response(None, index=index, status=404)
        readable = request_acl(request).filter(catalog.node_services(node), service_of)
        services = {s["ID"]: views.agent_service(s) for s in readable}
        return json_response({"Node": found, "Services": services}, index=index)

    @r.put("/v1/catalog/register", tags=["catalog"],
           **needs("node:write", on="Node, unless it exists unchanged; service:write on Service"))
    async def catalog_register(request: Request) -> Response:
        body = await read_json(request)
        node, services, checks = parse_catalog_register(body, cp.datacenter, catalog.node_services)
        require_register(request, node, services, checks)
        await catalog.register(node, services, checks)
        return json_response(True)

    @r.put("/v1/catalog/deregister", tags=["catalog"],
           **needs("node:write", on="Node; service:write on the service of ServiceID or CheckID"))
    async def catalog_deregister(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not body.get("Node"):
            raise InvalidInput("Node: missing; send {\"Node\": \"name\", \"ServiceID\"?: \"id\", \"CheckID\"?: \"id\"}")
        require_deregister(request, body["Node"], body.get("ServiceID", ""), body.get("CheckID", ""))
        await catalog.deregister(body["Node"], service_id=body.get("ServiceID", ""), check_id=body.get("CheckID", ""))
        return json_response(True)

    @r.get("/v1/tether/virtual-ips", tags=["catalog"], **needs("service:read", filtered=True))
    async def virtual_ips(request: Request) -> Response:
        """{service: virtual IP}: what transparent proxies map original destinations with."""
        index = await block(request, store, [VIPS])
        vips = catalog.virtual_ips()
        return json_response({n: vips[n] for n in request_acl(request).filter(vips, lambda n: ("service", n))},
                             index=index)

    # -- health --------------------------------------------------------------------

    @r.get("/v1/health/service/{name}", tags=["health"], **needs("service:read", on="{name}; node:read filters"))
    async def health_service(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        index = await block(request, store, Catalog.health_prefixes(name))
        entries = readable_entries(request, catalog.health(catalog.instances(name), passing=flag(request, "passing"),
                                                           tag=request.query_params.get("tag", "")))
        return json_response([views.health_service(e) for e in entries], index=index)

    @r.get("/v1/health/connect/{name}", tags=["health"], **needs("service:read", on="{name}; node:read filters"))
    async def health_connect(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        index = await block(request, store, Catalog.health_prefixes(name, connect=True))
        entries = readable_entries(request, catalog.health(catalog.connect_instances(name),
                                                           passing=flag(request, "passing")))
        return json_response([views.health_service(e) for e in entries], index=index)

    @r.get("/v1/health/checks/{name}", tags=["health"], **needs("service:read", on="{name}; node:read filters"))
    async def health_checks(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        index = await block(request, store, [f"{CHECKS}{name}/"])
        return json_response(readable_checks(request, catalog.service_checks(name)), index=index)

    @r.get("/v1/health/node/{node}", tags=["health"], **needs("node:read", on="{node}; service:read filters"))
    async def health_node(request: Request, node: str) -> Response:
        request_acl(request).require("node", node, READ)
        index = await block(request, store, [NODE_CHECKS, CHECKS])
        return json_response(readable_checks(request, catalog.node_checks(node)), index=index)

    @r.get("/v1/health/state/{state}", tags=["health"], **needs("node:read", on="service:read", filtered=True))
    async def health_state(request: Request, state: str) -> Response:
        if state not in STATUSES + ("any",):
            raise InvalidInput(f"state must be any, passing, warning or critical, not {state!r}")
        index = await block(request, store, [NODE_CHECKS, CHECKS])
        checks = [c for n in catalog.nodes() for c in catalog.node_checks(n["Node"])]
        checks = readable_checks(request, [c for c in checks if state in ("any", c["Status"])])
        return json_response(checks, index=index)

    # -- KV ------------------------------------------------------------------------

    @r.get("/v1/kv/{key:path}", tags=["kv"], **needs("key:read", on="{key}; ?recurse and ?keys filter (key:list with enable_key_list_policy)"))
    async def kv_get(request: Request, key: str) -> Response:
        acl = request_acl(request)
        keys_only = flag(request, "keys")
        recurse = flag(request, "recurse") or keys_only
        if recurse and cp.acl.config.enable_key_list_policy:
            acl.require("key", key, "list")  # Consul's acl.enable_key_list_policy: listing needs `list`
        elif not recurse:
            acl.require("key", key, READ)
        index = await block(request, store, [kv.prefix(key)])
        if keys_only:
            found = acl.filter(kv.keys(key, request.query_params.get("separator", "")), lambda k: ("key", k))
            return json_response(found, index=index, status=200 if found else 404)
        entries = kv.list(key) if recurse else [e for e in [kv.get(key)] if e]
        if recurse:
            entries = acl.filter(entries, lambda e: ("key", e.key.removeprefix(kv.prefix(""))))
        if not entries:
            return Response(status_code=404, headers={"X-Consul-Index": str(index)})
        if flag(request, "raw") and not recurse:
            return Response(raw_value(entries[0]), headers={"X-Consul-Index": str(index)},
                            media_type="application/octet-stream")
        return json_response([format_pair(e) for e in entries], index=index)

    @r.put("/v1/kv/{key:path}", tags=["kv"], **needs("key:write", on="{key}"))
    async def kv_put(request: Request, key: str) -> Response:
        request_acl(request).require("key", key, WRITE)
        for unsupported in ("acquire", "release"):
            if unsupported in request.query_params:
                raise InvalidInput(f"{unsupported}: sessions and locks are not supported by Tether yet")
        flags = int_param(request, "flags", 0) or 0
        cas = int_param(request, "cas")
        ok = await kv.put(key, await read_body(request), flags=flags, cas=cas)
        return json_response(ok)

    @r.delete("/v1/kv/{key:path}", tags=["kv"], **needs("key:write", on="{key}; ?recurse: every key under it"))
    async def kv_delete(request: Request, key: str) -> Response:
        acl = request_acl(request)
        if flag(request, "recurse"):
            acl.require_key_tree_write(key)
        else:
            acl.require("key", key, WRITE)
        ok = await kv.delete(key, recurse=flag(request, "recurse"), cas=int_param(request, "cas"))
        return json_response(ok)

    # -- status & internal (agent <-> server) --------------------------------------

    @r.get("/v1/status/leader", tags=["status"], **needs("none"))
    async def status_leader(request: Request) -> Response:
        return json_response(f"{request.url.hostname}:{request.url.port}")

    @r.get("/v1/status/peers", tags=["status"], **needs("none"))
    async def status_peers(request: Request) -> Response:
        return json_response([f"{request.url.hostname}:{request.url.port}"])

    @r.get("/v1/internal/tether/cluster", tags=["internal"], include_in_schema=False, **needs("none"))
    async def cluster_info() -> Response:
        return json_response({"ClusterID": cp.cluster_id, "Datacenter": cp.datacenter})

    @r.put("/v1/internal/tether/sync", tags=["internal"], include_in_schema=False,
           **needs("node:write", on="the agent's node (the agent checked service:write when it took the registration)"))
    async def agent_sync(request: Request) -> Response:
        """An agent's atomic upsert of its node, service instances and checks."""
        body = await read_json(request)
        try:
            require_own_node(request, body["Node"]["Node"], body.get("Services", []), body.get("Checks", []))
            await catalog.register(body["Node"], body.get("Services", []), body.get("Checks", []))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a shape no agent sends
            raise InvalidInput(f"malformed sync body: {exc!r}") from exc
        return json_response(True)

    @r.put("/v1/internal/tether/check", tags=["internal"], include_in_schema=False, **needs("node:write", on="Node"))
    async def agent_check(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidInput("malformed check update: expected a JSON object")
        wrong = [k for k in ("Node", "CheckID", "Status") if not isinstance(body.get(k), str)]
        if wrong or not isinstance(body.get("Output", ""), str):
            raise InvalidInput(f"malformed check update: {', '.join(wrong) or 'Output'} must be a string")
        request_acl(request).require("node", body["Node"], WRITE)
        await catalog.update_check(body["Node"], body["CheckID"], body["Status"], body.get("Output", ""))
        return json_response(True)

    @r.put("/v1/internal/tether/heartbeat/{node}", tags=["internal"], include_in_schema=False,
           **needs("node:write", on="{node}"))
    async def agent_heartbeat(request: Request, node: str) -> Response:
        request_acl(request).require("node", node, WRITE)
        await cp.heartbeat(node)
        return json_response(True)

    def require_register(request: Request, node: dict[str, Any], services: list[dict[str, Any]],
                         checks: list[dict[str, Any]]) -> None:
        """Consul's rule: node:write unless the node exists unchanged; service:write per service;
        node:write for node checks, service:write for a service's checks."""
        acl = request_acl(request)
        stored = catalog.node(node["Node"])
        unchanged = stored is not None and all(stored.get(k) == v for k, v in node.items() if k != "ID")
        if not unchanged or any(not c["ServiceID"] for c in checks):
            acl.require("node", node["Node"], WRITE)
        for svc in services:
            acl.require("service", svc["Service"], WRITE)
            destination = (svc.get("Proxy") or {}).get("DestinationServiceName")
            if svc.get("Kind") == "connect-proxy" and destination:
                acl.require("service", destination, WRITE)
        for check in checks:
            if check["ServiceID"]:
                acl.require("service", check["ServiceName"], WRITE)

    def require_deregister(request: Request, node: str, service_id: str, check_id: str) -> None:
        acl = request_acl(request)
        if service_id:
            owner = next((s for s in catalog.node_services(node) if s["ID"] == service_id), None)
            acl.require("service", owner["Service"] if owner else service_id, WRITE)
        elif check_id:
            found = catalog.find_check(node, check_id)
            if found is not None and found.value["ServiceID"]:
                acl.require("service", found.value["ServiceName"], WRITE)
            else:
                acl.require("node", node, WRITE)
        else:
            acl.require("node", node, WRITE)

    def require_own_node(request: Request, node: str, services: list[dict[str, Any]],
                         checks: list[dict[str, Any]]) -> None:
        """An agent's sync may only place services and checks on the node it writes."""
        request_acl(request).require("node", node, WRITE)
        strays = [d.get("Node") for d in [*services, *checks] if d.get("Node") not in (None, node)]
        if strays:
            raise InvalidInput(f"sync for node {node!r} carries documents of node {strays[0]!r}")

    return r


def parse_catalog_register(
    body: Any, datacenter: str, node_services: Callable[[str], list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Consul's /v1/catalog/register body -> (node, services, checks) documents."""
    if not isinstance(body, dict) or not body.get("Node"):
        raise InvalidInput("Node: missing; /v1/catalog/register needs at least Node and Address")
    unknown = sorted(set(body) - set(_REGISTER_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    _require_types(body, _REGISTER_FIELDS, "")
    name = body["Node"]
    node = {"ID": body.get("ID", ""), "Node": name, "Address": body.get("Address", ""),
            "Datacenter": body.get("Datacenter") or datacenter,
            "TaggedAddresses": body.get("TaggedAddresses") or {}, "Meta": body.get("NodeMeta") or {}}
    services: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    if body.get("Service"):
        svc = dict(body["Service"])
        if "Service" in svc and "Name" not in svc:
            svc["Name"] = svc.pop("Service")
        definition = parse_service_definition(svc)
        services.append(format_service(definition, node=name, datacenter=node["Datacenter"]))
    raw_checks = ([body["Check"]] if body.get("Check") else []) + list(body.get("Checks") or [])
    for i, raw in enumerate(raw_checks):
        if not isinstance(raw, dict):
            raise InvalidInput(f"Checks[{i}]: expected a JSON object, got {type(raw).__name__}")
        raw = {k: v for k, v in raw.items() if k not in ("Node", "Definition", "Type")}
        check = parse_check_definition(raw, path=f"Checks[{i}]") if _has_kind(raw) else None
        doc = format_check(check, None, name, i, len(raw_checks)) if check else _passive_check(raw, name)
        if doc["ServiceID"]:
            candidates = services + node_services(name)
            owner = next((s for s in candidates if s["ID"] == doc["ServiceID"]), None)
            if owner is None:
                raise NotFound(f"Checks[{i}].ServiceID: unknown service {doc['ServiceID']!r}")
            doc["ServiceName"], doc["ServiceTags"] = owner["Service"], owner["Tags"]
        checks.append(doc)
    return node, services, checks


#: /v1/catalog/register's fields and their JSON types (a wrong type is a 400 naming the field).
_REGISTER_FIELDS: dict[str, type] = {"ID": str, "Node": str, "Address": str, "Datacenter": str, "TaggedAddresses": dict,
                                     "NodeMeta": dict, "Service": dict, "Check": dict, "Checks": list,
                                     "SkipNodeUpdate": bool}
_PASSIVE_CHECK_FIELDS: dict[str, type] = {k: str for k in ("CheckID", "Name", "Status", "Notes", "Output", "ServiceID")}
_JSON_TYPE = {str: "a string", dict: "an object", list: "an array", bool: "true or false"}


def _require_types(body: dict[str, Any], fields: dict[str, type], where: str) -> None:
    for key, kind in fields.items():
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise InvalidInput(f"{where}{key}: must be {_JSON_TYPE[kind]}, got {type(body[key]).__name__}")


def _has_kind(raw: dict[str, Any]) -> bool:
    return any(k in raw for k in ("TTL", "TCP", "HTTP", "AliasService"))


def _passive_check(raw: dict[str, Any], node: str) -> dict[str, Any]:
    """A catalog-only check (no runner): the caller sets its status directly, as in Consul."""
    _require_types(raw, _PASSIVE_CHECK_FIELDS, "Check.")
    check_id = raw.get("CheckID") or raw.get("Name")
    if not check_id:
        raise InvalidInput("Check.CheckID or Check.Name: missing")
    status = raw.get("Status") or "critical"
    if status not in STATUSES:
        raise InvalidInput(f"Check.Status: must be one of {', '.join(STATUSES)}, not {status!r}")
    return {"Node": node, "CheckID": check_id, "Name": raw.get("Name") or check_id, "Status": status,
            "Notes": raw.get("Notes", ""), "Output": raw.get("Output", ""), "ServiceID": raw.get("ServiceID", ""),
            "ServiceName": "", "ServiceTags": [], "Type": "", "Definition": {}}
