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
from tether.api.compat import datacenter_dependency, for_peer, request_filter, require_local_datacenter
from tether.control import status_api
from tether.control import views
from tether.control.catalog import CHECKS, NODE_CHECKS, NODES, SERVICES, VIPS, Catalog
from tether.control.kv import format_pair, raw_value
from tether.control.server import ControlPlane
from tether.core.acl import READ, WRITE
from tether.core.errors import InvalidInput, NotFound
from tether.core.health import STATUSES
from tether.core.namespaces import ALL_NAMESPACES, DEFAULT_NAMESPACE, in_namespace, parse_ns_param
from tether.core.registration import format_check, format_service
from tether.core.normalize import OPAQUE, Shape, normalize, raise_if
from tether.core.service import CHECK_SHAPE, parse_check_definition, parse_service_definition

#: The service every Consul catalog lists: its servers (Tether's servers are this API).
CONSUL_SERVICE = "consul"


def ns_of(request: Request) -> str:
    """Consul's `?ns=` (core/namespaces.py): `default` when absent, `*` for every namespace."""
    return parse_ns_param(request.query_params.get("ns"))


def server_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency()), Depends(datacenter_dependency(cp.datacenter))])
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
        """`?filter=` runs over the instances (Consul's ServiceNode fields: ServiceName, ServiceTags,
        ServiceMeta, Node, ...); a service is listed when one of its instances passes."""
        filtered = "filter" in request.query_params
        keep = request_filter(request)
        ns = ns_of(request)
        index = await block(request, store, [SERVICES, NODES] if filtered else [SERVICES])
        if for_peer(request):
            services: dict[str, list[str]] = {}
        elif filtered:
            services = {}
            for instance in in_namespace(catalog.all_instances(), ns):
                if keep(views.catalog_service(catalog.node(instance["Node"]), instance)):
                    tags = services.setdefault(instance["Service"], [])
                    tags.extend(t for t in instance["Tags"] if t not in tags)
        else:
            services = {**({CONSUL_SERVICE: []} if ns in (DEFAULT_NAMESPACE, ALL_NAMESPACES) else {}),
                        **catalog.services(ns)}
        kept = request_acl(request).filter(services, lambda name: ("service", name))
        return json_response({name: sorted(services[name]) for name in kept}, index=index)

    @r.get("/v1/catalog/service/{name}", tags=["catalog"], **needs("service:read", on="{name}; node:read filters"))
    async def catalog_service(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        keep = request_filter(request)
        index = await block(request, store, [f"{SERVICES}{name}/", NODES])
        tag = request.query_params.get("tag", "")
        found = [] if for_peer(request) else in_namespace(catalog.instances(name), ns_of(request))
        instances = request_acl(request).filter(found, node_of)
        out = [views.catalog_service(catalog.node(s["Node"]), s) for s in instances if not tag or tag in s["Tags"]]
        return json_response([e for e in out if keep(e)], index=index)

    @r.get("/v1/catalog/connect/{name}", tags=["catalog"], **needs("service:read", on="{name}; node:read filters"))
    async def catalog_connect(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        keep = request_filter(request)
        index = await block(request, store, [SERVICES, NODES])
        connect = [] if for_peer(request) else in_namespace(catalog.connect_instances(name), ns_of(request))
        instances = request_acl(request).filter(connect, node_of)
        out = [views.catalog_service(catalog.node(s["Node"]), s) for s in instances]
        return json_response([e for e in out if keep(e)], index=index)

    @r.get("/v1/catalog/nodes", tags=["catalog"], **needs("node:read", filtered=True))
    async def catalog_nodes(request: Request) -> Response:
        keep = request_filter(request)
        index = await block(request, store, [NODES])
        nodes = [] if for_peer(request) else catalog.nodes()
        return json_response([n for n in request_acl(request).filter(nodes, node_of) if keep(n)], index=index)

    @r.get("/v1/catalog/node/{node}", tags=["catalog"], **needs("node:read", on="{node}; service:read filters"))
    async def catalog_node(request: Request, node: str) -> Response:
        request_acl(request).require("node", node, READ)
        index = await block(request, store, [f"{NODES}{node}", SERVICES])
        found = None if for_peer(request) else catalog.node(node)
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
        body = parse_catalog_deregister(await read_json(request), cp.datacenter)
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
        keep = request_filter(request)
        index = await block(request, store, Catalog.health_prefixes(name))
        instances = [] if for_peer(request) else in_namespace(catalog.instances(name), ns_of(request))
        entries = readable_entries(request, catalog.health(instances, passing=flag(request, "passing"),
                                                           tag=request.query_params.get("tag", "")))
        return json_response([v for v in map(views.health_service, entries) if keep(v)], index=index)

    @r.get("/v1/health/connect/{name}", tags=["health"], **needs("service:read", on="{name}; node:read filters"))
    async def health_connect(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        keep = request_filter(request)
        index = await block(request, store, Catalog.health_prefixes(name, connect=True))
        connect = [] if for_peer(request) else in_namespace(catalog.connect_instances(name), ns_of(request))
        entries = readable_entries(request, catalog.health(connect, passing=flag(request, "passing")))
        return json_response([v for v in map(views.health_service, entries) if keep(v)], index=index)

    @r.get("/v1/health/checks/{name}", tags=["health"], **needs("service:read", on="{name}; node:read filters"))
    async def health_checks(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, READ)
        keep = request_filter(request)
        index = await block(request, store, [f"{CHECKS}{name}/"])
        checks = [] if for_peer(request) else catalog.service_checks(name)
        return json_response([c for c in readable_checks(request, checks) if keep(c)], index=index)

    @r.get("/v1/health/node/{node}", tags=["health"], **needs("node:read", on="{node}; service:read filters"))
    async def health_node(request: Request, node: str) -> Response:
        request_acl(request).require("node", node, READ)
        keep = request_filter(request)
        index = await block(request, store, [NODE_CHECKS, CHECKS])
        checks = [] if for_peer(request) else catalog.node_checks(node)
        return json_response([c for c in readable_checks(request, checks) if keep(c)], index=index)

    @r.get("/v1/health/state/{state}", tags=["health"], **needs("node:read", on="service:read", filtered=True))
    async def health_state(request: Request, state: str) -> Response:
        if state not in STATUSES + ("any",):
            raise InvalidInput(f"state must be any, passing, warning or critical, not {state!r}")
        keep = request_filter(request)
        index = await block(request, store, [NODE_CHECKS, CHECKS])
        checks = [] if for_peer(request) else [c for n in catalog.nodes() for c in catalog.node_checks(n["Node"])]
        checks = readable_checks(request, [c for c in checks if state in ("any", c["Status"]) and keep(c)])
        return json_response(checks, index=index)

    # -- KV ------------------------------------------------------------------------

    @r.get("/v1/kv/{key:path}", tags=["kv"], **needs("key:read", on="{key}; ?recurse and ?keys filter (key:list with enable_key_list_policy)"))
    async def kv_get(request: Request, key: str) -> Response:
        acl = request_acl(request)
        keys_only = flag(request, "keys")
        recurse = flag(request, "recurse") or keys_only
        if not recurse and not key.strip("/"):
            raise InvalidInput("Missing key name")
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
        flags = int_param(request, "flags", 0) or 0
        cas = int_param(request, "cas")
        value = await read_body(request)
        lock = [verb for verb in ("acquire", "release") if verb in request.query_params]
        if len(lock) == 2:
            raise InvalidInput("acquire and release cannot be combined")
        if lock:
            kv.validate(key, value, flags)
            session = request.query_params[lock[0]]
            return json_response(await cp.sessions.kv_lock(key, value, flags, session, acquire=lock[0] == "acquire",
                                                           cas=cas))
        return json_response(await kv.put(key, value, flags=flags, cas=cas))

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
        return json_response(status_api.leader_address(cp, request))

    @r.get("/v1/status/peers", tags=["status"], **needs("none"))
    async def status_peers(request: Request) -> Response:
        return json_response(status_api.peer_addresses(cp, request))

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


#: Consul decodes these bodies case-insensitively (Go's JSON decoder): `{"node": ...}` is `Node`.
CATALOG_CHECK_SHAPE = Shape({**CHECK_SHAPE.fields, "Node": None, "Definition": OPAQUE, "Type": None, "Output": None,
                             "ServiceName": None, "ServiceTags": None, "Namespace": None, "Partition": None},
                            aliases=CHECK_SHAPE.aliases)
REGISTER_SHAPE = Shape({"ID": None, "Node": None, "Address": None, "Datacenter": None, "TaggedAddresses": OPAQUE,
                        "NodeMeta": OPAQUE, "Service": OPAQUE, "Check": CATALOG_CHECK_SHAPE,
                        "Checks": [CATALOG_CHECK_SHAPE], "SkipNodeUpdate": None, "WriteRequest": OPAQUE,
                        "Namespace": None, "Partition": None, "Locality": OPAQUE})
DEREGISTER_SHAPE = Shape({"Node": None, "Datacenter": None, "ServiceID": None, "CheckID": None,
                          "WriteRequest": OPAQUE, "Namespace": None, "Partition": None})


def parse_catalog_deregister(body: Any, datacenter: str) -> dict[str, Any]:
    """Consul's /v1/catalog/deregister body, with canonical keys."""
    errors: list[str] = []
    data = normalize(body, DEREGISTER_SHAPE, "body", errors) if isinstance(body, dict) else body
    raise_if(errors)
    if not isinstance(data, dict) or not data.get("Node"):
        raise InvalidInput("Node: missing; send {\"Node\": \"name\", \"ServiceID\"?: \"id\", \"CheckID\"?: \"id\"}")
    require_local_datacenter(data.get("Datacenter") or "", datacenter)
    return data


def parse_catalog_register(
    body: Any, datacenter: str, node_services: Callable[[str], list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Consul's /v1/catalog/register body -> (node, services, checks) documents."""
    errors: list[str] = []
    if isinstance(body, dict):
        body = normalize(body, REGISTER_SHAPE, "body", errors)
        raise_if([e.removeprefix("body.") for e in errors])
    if not isinstance(body, dict) or not body.get("Node"):
        raise InvalidInput("Node: missing; /v1/catalog/register needs at least Node and Address")
    _require_types(body, _REGISTER_FIELDS, "")  # unknown keys were refused by normalize
    require_local_datacenter(body.get("Datacenter") or "", datacenter)
    name = body["Node"]
    node = {"ID": body.get("ID", ""), "Node": name, "Address": body.get("Address", ""),
            "Datacenter": datacenter,
            "TaggedAddresses": body.get("TaggedAddresses") or {}, "Meta": body.get("NodeMeta") or {}}
    services: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    if body.get("Service"):
        svc = dict(body["Service"])
        named = {k.lower(): k for k in svc}
        if "service" in named and "name" not in named:  # the catalog's `Service` is the agent's `Name`
            svc["Name"] = svc.pop(named["service"])
        definition = parse_service_definition(svc)
        services.append(format_service(definition, node=name, datacenter=node["Datacenter"]))
    raw_checks = ([body["Check"]] if body.get("Check") else []) + list(body.get("Checks") or [])
    for i, raw in enumerate(raw_checks):
        if not isinstance(raw, dict):
            raise InvalidInput(f"Checks[{i}]: expected a JSON object, got {type(raw).__name__}")
        raw = {k: v for k, v in raw.items()
               if k not in ("Node", "Definition", "Type", "ServiceName", "ServiceTags", "Namespace", "Partition")}
        output = raw.pop("Output", "")
        check = parse_check_definition(raw, path=f"Checks[{i}]") if _has_kind(raw) else None
        doc = format_check(check, None, name, i, len(raw_checks)) if check else _passive_check(raw, name, output)
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


def _passive_check(raw: dict[str, Any], node: str, output: str) -> dict[str, Any]:
    """A catalog-only check (no runner): the caller sets its status directly, as in Consul."""
    _require_types(raw, _PASSIVE_CHECK_FIELDS, "Check.")
    check_id = raw.get("CheckID") or raw.get("Name")
    if not check_id:
        raise InvalidInput("Check.CheckID or Check.Name: missing")
    status = raw.get("Status") or "critical"
    if status not in STATUSES:
        raise InvalidInput(f"Check.Status: must be one of {', '.join(STATUSES)}, not {status!r}")
    return {"Node": node, "CheckID": check_id, "Name": raw.get("Name") or check_id, "Status": status,
            "Notes": raw.get("Notes", ""), "Output": output, "ServiceID": raw.get("ServiceID", ""),
            "ServiceName": "", "ServiceTags": [], "Type": "", "Definition": {}}
