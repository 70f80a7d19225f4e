"""HTTP routes for the external-service registry and the outbound policy (Tether's own,
under /v1/tether/; Consul has no equivalent)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, block, json_response, parse_json, read_body
from tether.control.egress import PREFIX, SERVICES, EgressService
from tether.core.errors import NotFound
from tether.core.external_yaml import parse_external_documents, parse_external_yaml


def egress_router(egress: EgressService) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())], tags=["egress"])
    store = egress.store

    def readable_applied(request: Request) -> list[dict]:
        # A DestinationRule is read under the entries it configures; one that configures none under mesh.
        pairs = egress.applied_with_owner()
        return [doc for doc, _ in request_acl(request).filter(pairs, lambda p: ("service", p[1]) if p[1] else ("mesh", ""))]

    @r.get("/v1/tether/egress", **needs("service:read", on="all"))
    async def egress_state(request: Request) -> Response:
        """Everything a proxy needs to decide egress: services and policy (blocking). Whole or
        a 403, never filtered: a registry with entries hidden would refuse traffic that the
        registry allows, with "not in the registry" as the reason."""
        request_acl(request).require_all("service", "read")
        index = await block(request, store, [PREFIX])
        services, policy = egress.documents()
        return json_response({"Services": services, "Policy": policy}, index=index)

    @r.get("/v1/tether/external-services",
           **needs("service:read", on="each entry; a DestinationRule under the entry it configures", filtered=True))
    async def list_services(request: Request) -> Response:
        index = await block(request, store, [PREFIX])
        return json_response(readable_applied(request), index=index)

    @r.get("/v1/tether/external-services/{name}", **needs("service:read", on="{name}"))
    async def get_service(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, "read")
        index = await block(request, store, [SERVICES + name])
        found = [d for d in egress.documents()[0] if d["metadata"]["name"] == name]  # DestinationRules folded in
        if not found:
            raise NotFound(f"no external service named {name!r}")
        return json_response(found[0], index=index)

    @r.put("/v1/tether/external-services",
           **needs("service:write", on="each external service, and each a DestinationRule configures; mesh:write for "
                                       "an OutboundPolicy or a DestinationRule that configures none"))
    async def apply(request: Request) -> Response:
        """Body: YAML (one or more documents) or a JSON list of documents. All or nothing."""
        body = await read_body(request)
        if request.headers.get("content-type", "").startswith("application/json"):
            docs = parse_json(body)
            config = parse_external_documents(docs if isinstance(docs, list) else [docs], source="request")
        else:
            config = parse_external_yaml(body, source="request")
        for service in config.services:
            request_acl(request).require("service", service.name, "write")
        for owner in egress.rule_owners(config):
            if owner:
                request_acl(request).require("service", owner, "write")
            else:
                request_acl(request).require("mesh", "", "write")
        if config.policy is not None:
            request_acl(request).require("mesh", "", "write")
        applied, warnings = await egress.apply(config)
        return json_response({"Applied": applied, "Warnings": warnings})

    @r.delete("/v1/tether/destination-rules/{namespace}/{name}",
              **needs("service:write", on="the entry it configures; mesh:write when it configures none"))
    async def delete_rule(request: Request, namespace: str, name: str) -> Response:
        owner = egress.rule_owner(namespace, name)
        if owner:
            request_acl(request).require("service", owner, "write")
        else:
            request_acl(request).require("mesh", "", "write")
        await egress.delete_rule(namespace, name)
        return json_response(True)

    @r.delete("/v1/tether/external-services/{name}", **needs("service:write", on="{name}"))
    async def delete_service(request: Request, name: str) -> Response:
        request_acl(request).require("service", name, "write")
        await egress.delete(name)
        return json_response(True)

    return r
