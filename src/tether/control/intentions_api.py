"""HTTP routes for intentions (Consul's paths and shapes) and Tether's server policy.

Consul's routes (`/v1/connect/intentions...`, REFERENCE.md 1.5):

    PUT|GET|DELETE /v1/connect/intentions/exact?source=S&destination=D
    GET  /v1/connect/intentions/check?source=S&destination=D     -> {"Allowed": bool}
    GET  /v1/connect/intentions/match?by=source|destination&name=N[&name=M]
    GET  /v1/connect/intentions            POST /v1/connect/intentions -> {"ID": ...}
    GET|PUT|DELETE /v1/connect/intentions/<uuid>

Tether's own (docs/authorization.md, "HTTP API"):

    PUT  /v1/tether/policy                 apply YAML or JSON policy documents, all or nothing;
                                           answers what was applied and `Warnings`
    GET  /v1/tether/policy                 every policy document (mesh first), re-appliable
    GET  /v1/tether/policy/<service>       that service's ServerPolicy documents, and the Linkerd
                                           objects that make its policies (as applied)
    DELETE /v1/tether/policy/<service>[?port=N]
    DELETE /v1/tether/policy/linkerd/<kind>/<namespace>/<name>   one stored Linkerd object
    DELETE /v1/tether/policy/istio/<namespace>/<name>            one stored Istio AuthorizationPolicy
    GET|PUT /v1/tether/mesh                the mesh settings (MeshPolicy document)
    GET  /v1/internal/tether/authz         the whole authorization state (what agents watch)

Every GET is a blocking query over the store prefixes it reads. Every response carries
`X-Consul-Default-ACL-Policy` (the mesh default intention), as Consul's do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import PlainTextResponse, Response

from tether.api.acl import INTENTION, needs, request_acl
from tether.api.common import authorizer_dependency, block, int_param, json_response, read_body, read_json
from tether.control.intentions import AUTHZ_PREFIXES, INTENTIONS, LINKERD, POLICY, SERVERS
from tether.control.server import ControlPlane
from tether.core.errors import InvalidInput, NotFound
from tether.core.intentions import Intention, format_intention, parse_intention, split_qualified
from tether.core.nesting import check_json_depth
from tether.core.utf8 import check_json_text
from tether.core.policy_yaml import (
    TETHER_API, PolicyDocuments, format_mesh_policy, format_server_policy, parse_policy_documents, parse_policy_objects,
)
from tether.core.spiffe import validate_service_name

def intentions_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])
    store, svc = cp.store, cp.intentions

    def reply(data: Any, *, index: int | None = None, status: int = 200) -> Response:
        header = {"X-Consul-Default-ACL-Policy": svc.mesh().default_intention}
        return json_response(data, index=index, status=status, headers=header)

    # -- exact (Consul 1.9+) ---------------------------------------------------------------

    def may(request: Request, destination: str, access: str) -> None:
        request_acl(request).require(INTENTION, split_qualified(destination)[1], access)

    def readable(request: Request, intentions: list[Intention]) -> list[Intention]:
        return request_acl(request).filter(intentions, lambda i: (INTENTION, i.destination_name))

    @r.get("/v1/connect/intentions/exact", tags=["intentions"], **needs("intentions:read", on="destination"))
    async def exact_get(request: Request) -> Response:
        source, destination = _pair(request)
        may(request, destination, "read")
        index = await block(request, store, [INTENTIONS])
        found = svc.find_exact(source, destination)
        if found is None:
            return PlainTextResponse(f"Intention not found: no intention {source} -> {destination}", status_code=404,
                                     headers={"X-Consul-Index": str(index)})
        return reply(format_intention(found), index=index)

    @r.put("/v1/connect/intentions/exact", tags=["intentions"], **needs("intentions:write", on="destination"))
    async def exact_put(request: Request) -> Response:
        source, destination = _pair(request)
        may(request, destination, "write")
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidInput('Request decode failed: send a JSON object such as {"Action": "allow"}')
        await svc.upsert_exact(source, destination, body)
        return reply(True)

    @r.delete("/v1/connect/intentions/exact", tags=["intentions"], **needs("intentions:write", on="destination"))
    async def exact_delete(request: Request) -> Response:
        source, destination = _pair(request)
        may(request, destination, "write")
        await svc.delete_exact(source, destination)
        return reply(True)

    # -- check and match ---------------------------------------------------------------------

    @r.get("/v1/connect/intentions/check", tags=["intentions"], **needs("intentions:read", on="destination"))
    async def check(request: Request) -> Response:
        source, destination = _pair(request)
        may(request, destination, "read")
        kind = request.query_params.get("source-type", "consul")
        if kind != "consul":
            raise InvalidInput(f"source-type: {kind!r} is not supported; Tether sources are 'consul' services")
        if source == "*":
            raise InvalidInput("source: must name a service; '*' is not a caller")
        index = await block(request, store, AUTHZ_PREFIXES)
        return reply({"Allowed": svc.check(source, destination)}, index=index)

    @r.get("/v1/connect/intentions/match", tags=["intentions"],
           **needs("intentions:read", on="each name; results filtered by destination"))
    async def match(request: Request) -> Response:
        by = request.query_params.get("by", "")
        if by not in ("source", "destination"):
            raise InvalidInput(f"by: must be 'source' or 'destination', got {by!r}")
        names = request.query_params.getlist("name")
        if not names:
            raise InvalidInput("name: required (repeat it to match several services)")
        for name in names:
            _check_name("name", name)
            may(request, name, "read")
        index = await block(request, store, [INTENTIONS])
        snap = svc.snapshot()
        pick = snap.match_source if by == "source" else snap.match_destination
        return reply({name: [format_intention(i) for i in readable(request, list(pick(name)))] for name in names},
                     index=index)

    # -- by ID (legacy) ------------------------------------------------------------------------

    @r.get("/v1/connect/intentions", tags=["intentions"], **needs("intentions:read", filtered=True))
    async def list_all(request: Request) -> Response:
        index = await block(request, store, [INTENTIONS])  # refuses ?filter= (not implemented), as every list does
        return reply([format_intention(i) for i in readable(request, list(svc.list()))], index=index)

    @r.post("/v1/connect/intentions", tags=["intentions"], **needs("intentions:write", on="DestinationName"))
    async def create(request: Request) -> Response:
        intention = parse_intention(await read_json(request))
        may(request, intention.destination_name, "write")
        created = await svc.create(intention)
        return reply({"ID": created.id})

    @r.get("/v1/connect/intentions/{intention_id}", tags=["intentions"], **needs("intentions:read", on="destination"))
    async def get_one(request: Request, intention_id: str) -> Response:
        may(request, svc.get(intention_id).destination_name, "read")
        index = await block(request, store, [f"{INTENTIONS}{intention_id}"])
        return reply(format_intention(svc.get(intention_id)), index=index)

    @r.put("/v1/connect/intentions/{intention_id}", tags=["intentions"],
           **needs("intentions:write", on="the old and the new destination"))
    async def update(request: Request, intention_id: str) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise InvalidInput("Request decode failed: send an intention JSON object")
        may(request, svc.get(intention_id).destination_name, "write")
        new_destination = next((v for k, v in body.items() if k.lower() == "destinationname"), None)
        if isinstance(new_destination, str):
            may(request, new_destination, "write")
        updated = await svc.update(intention_id, body)
        return reply({"ID": updated.id})

    @r.delete("/v1/connect/intentions/{intention_id}", tags=["intentions"], **needs("intentions:write", on="destination"))
    async def delete_one(request: Request, intention_id: str) -> Response:
        may(request, svc.get(intention_id).destination_name, "write")
        await svc.delete(intention_id)
        return reply(True)

    # -- Tether server policy ------------------------------------------------------------------

    @r.put("/v1/tether/policy", tags=["policy"],
           **needs("intentions:write", on="every service named or governed; mesh:write for a MeshPolicy and "
                                          "namespace-wide Linkerd objects"))
    async def policy_apply(request: Request) -> Response:
        docs = _documents(await read_body(request), request.query_params.get("file") or "request body")
        for intention in docs.intentions:
            may(request, intention.destination_name, "write")
        for policy in docs.server_policies:
            may(request, policy.service, "write")
        governed = svc.linkerd_services(docs)
        for service in governed - {None}:
            may(request, service, "write")  # type: ignore[arg-type]
        if docs.mesh is not None or None in governed:
            request_acl(request).require("mesh", "", "write")
        warnings = svc.plan(docs) + unregistered_targets(docs, cp.catalog.services())
        revision = await svc.apply(docs)
        return reply({
            "Index": revision,
            "Intentions": [f"{i.source} -> {i.destination}" for i in docs.intentions],
            "ServerPolicies": [f"{p.name} ({p.scope})" for p in docs.server_policies],
            "Linkerd": [f"{o.kind} {o.namespace}/{o.name}" for o in docs.linkerd],
            "Istio": [f"AuthorizationPolicy {o.namespace}/{o.name}" for o in docs.istio],
            "Mesh": sorted(docs.mesh_fields) if docs.mesh is not None else None,
            "Warnings": warnings,
        })

    @r.get("/v1/tether/policy", tags=["policy"],
           **needs("intentions:read", on="each service; mesh:read for Linkerd objects", filtered=True))
    async def policy_all(request: Request) -> Response:
        index = await block(request, store, [POLICY])
        policies = request_acl(request).filter(list(svc.server_policies()), lambda p: (INTENTION, p.service))
        linkerd = [o.doc for o in (*svc.linkerd_objects(), *svc.istio_objects())] \
            if request_acl(request).allowed("mesh", "", "read") else []
        return reply([format_mesh_policy(svc.mesh()), *(format_server_policy(p) for p in policies), *linkerd],
                     index=index)

    @r.get("/v1/tether/policy/{service}", tags=["policy"], **needs("intentions:read", on="{service}"))
    async def policy_get(request: Request, service: str) -> Response:
        _check_name("service", service, wildcard=False)
        may(request, service, "read")
        index = await block(request, store, [f"{SERVERS}{service}/", LINKERD])
        return reply([format_server_policy(p) for p in svc.server_policies(service)]
                     + svc.linkerd_documents_for(service), index=index)

    @r.delete("/v1/tether/policy/{service}", tags=["policy"], **needs("intentions:write", on="{service}"))
    async def policy_delete(request: Request, service: str) -> Response:
        _check_name("service", service, wildcard=False)
        may(request, service, "write")
        port = int_param(request, "port", None, minimum=1)
        await svc.delete_server_policy(service, port)
        return reply(True)

    @r.delete("/v1/tether/policy/linkerd/{kind}/{namespace}/{name}", tags=["policy"],
              **needs("intentions:write", on="the services the object governs; mesh:write for a namespace-wide one"))
    async def linkerd_delete(request: Request, kind: str, namespace: str, name: str) -> Response:
        found = [o for o in svc.linkerd_objects() if (o.kind, o.namespace, o.name) == (kind, namespace, name)]
        # Checked before the lookup answers, so a token cannot probe for objects it may not change.
        governed = svc.linkerd_services(PolicyDocuments(linkerd=tuple(found))) if found else {None}
        for service in governed - {None}:
            may(request, service, "write")  # type: ignore[arg-type]
        if None in governed:
            request_acl(request).require("mesh", "", "write")
        if not found:
            raise NotFound(f"no {kind} {namespace}/{name}; GET /v1/tether/policy lists what is stored")
        await svc.delete_linkerd(kind, namespace, name)
        return reply(True)

    @r.delete("/v1/tether/policy/istio/{namespace}/{name}", tags=["policy"],
              **needs("intentions:write", on="the service it selects; mesh:write when there is no such policy"))
    async def istio_delete(request: Request, namespace: str, name: str) -> Response:
        found = [o for o in svc.istio_objects() if (o.namespace, o.name) == (namespace, name)]
        if found:
            may(request, found[0].service, "write")
        else:  # checked before the 404, so a token cannot probe for policies
            request_acl(request).require("mesh", "", "write")
            raise NotFound(f"no AuthorizationPolicy {namespace}/{name}; GET /v1/tether/policy lists what is stored")
        await svc.delete_istio(namespace, name)
        return reply(True)

    @r.get("/v1/tether/mesh", tags=["policy"], **needs("none", on="readable by all, as Consul's mesh config entry"))
    async def mesh_get(request: Request) -> Response:
        index = await block(request, store, [POLICY])
        return reply(format_mesh_policy(svc.mesh()), index=index)

    @r.put("/v1/tether/mesh", tags=["policy"], **needs("mesh:write"))
    async def mesh_put(request: Request) -> Response:
        request_acl(request).require("mesh", "", "write")
        body = await read_json(request)
        if isinstance(body, dict) and "apiVersion" not in body:  # a bare spec
            body = {"apiVersion": TETHER_API, "kind": "MeshPolicy", "spec": body}
        mesh = await svc.set_mesh(parse_policy_objects([body], source="mesh settings"))
        return reply(format_mesh_policy(mesh))

    @r.get("/v1/internal/tether/authz", tags=["internal"], include_in_schema=False,
           **needs("intentions:read", on="all; with ?service=S, intentions:read or service:write on S"))
    async def authz_state(request: Request) -> Response:
        """What agents watch: intentions + policy documents + mesh settings, one index."""
        scope = authz_scope(request)  # refused before any wait
        index = await block(request, store, AUTHZ_PREFIXES)
        return reply(scoped_state(svc.state(), scope), index=index)

    return r


def unregistered_targets(docs: PolicyDocuments, services: Mapping[str, Any]) -> list[str]:
    """Warnings for policies whose service is not in the catalog: applied, but no effect yet."""
    out = []
    for p in docs.server_policies:
        if p.service not in services:
            out.append(f"ServerPolicy {p.name}: service {p.service!r} is not registered, so it has no effect until it is")
    for o in docs.linkerd:
        for service in (o.value.services or ()) if o.kind == "Server" else ():
            if service not in services:
                out.append(f"Server {o.namespace}/{o.name}: service {service!r} (from spec.podSelector) is not "
                           "registered, so it has no effect until it is")
    for a in docs.istio:
        if a.service not in services:
            out.append(f"AuthorizationPolicy {a.namespace}/{a.name}: service {a.service!r} (from spec.selector) is not "
                       "registered, so it has no effect until it is")
    for i in docs.intentions:
        if i.destination_name != "*" and i.destination_name not in services:
            out.append(f"ServiceIntentions {i.destination_name}: service {i.destination_name!r} is not registered, "
                       "so it has no effect until it is")
    return out


def authz_scope(request: Request) -> str | None:
    """Which authorization state the request may have, whole or not at all: it is never filtered.

    A filtered state is a different policy: a proxy deciding on it would deny what the
    intentions it was not shown allow (or allow what a hidden deny refuses). So a request
    gets every rule it asked about or a 403. `?service=S` asks about decisions with
    destination S only; that needs intentions:read on S, or service:write on S (the sidecar
    of S, whose registration token is S's identity, as Consul's authorize route asks).
    Without it, the whole state needs intentions:read on every service.
    Returns S, or None for the whole state.
    """
    acl = request_acl(request)
    service = request.query_params.get("service")
    if service is None:
        acl.require_all(INTENTION, "read")
        return None
    _check_name("service", service, wildcard=False)
    if not acl.allowed("service", service, "write"):
        acl.require(INTENTION, service, "read")
    return service


def scoped_state(state: dict[str, Any], service: str | None) -> dict[str, Any]:
    """Everything `decide(..., service)` reads: intentions to S and to `*`, S's server
    policies, the mesh settings (the whole state when `service` is None)."""
    if service is None:
        return state
    return {
        **state,
        "Intentions": [i for i in state["Intentions"] if i["DestinationName"] in (service, "*")],
        "Policies": [p for p in state["Policies"] if p.get("spec", {}).get("service", "") == service],
        "Namespaces": {k: v for k, v in (state.get("Namespaces") or {}).items() if k == service},
    }


def _check_name(field: str, value: str, *, wildcard: bool = True) -> str:
    if wildcard and value == "*":
        return value
    try:
        return validate_service_name(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}: {exc.message}") from None


def _pair(request: Request) -> tuple[str, str]:
    """The `source` and `destination` query parameters, validated like an intention's names."""
    missing = [p for p in ("source", "destination") if not request.query_params.get(p)]
    if missing:
        raise InvalidInput(f"{' and '.join(missing)}: required query parameter(s), e.g. ?source=web&destination=db")
    source, destination = request.query_params["source"], request.query_params["destination"]
    (src_ns, src), (dst_ns, dst) = split_qualified(source), split_qualified(destination)
    # `name` or Consul's `ns/name`; raises InvalidInput naming every bad value
    Intention(src, dst, "allow", source_ns=src_ns, destination_ns=dst_ns)
    return source, destination


def _documents(body: bytes, source: str) -> PolicyDocuments:
    """Policy documents from a YAML stream or JSON (one document, or an array of them)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body is not UTF-8 (byte {exc.start}); send YAML or JSON policy documents") from None
    if not text.strip():
        raise InvalidInput("the body is empty; send YAML or JSON policy documents (see docs/authorization.md)")
    if text.lstrip()[:1] in "[{":
        check_json_depth(body)
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            decoded = None  # YAML flow style also starts with [ or {
        if decoded is not None:
            check_json_text(body, decoded)
            return parse_policy_objects(decoded if isinstance(decoded, list) else [decoded], source=source)
    return parse_policy_documents(text, source=source)
