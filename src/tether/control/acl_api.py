"""The ACL HTTP API, Consul's paths, shapes and status codes (docs/acl.md, docs/api.md).

    PUT  /v1/acl/bootstrap                              the first management token, once
    PUT  /v1/acl/token          GET /v1/acl/tokens      create / list (?policy= ?role= ?servicename=)
    GET|PUT|DELETE /v1/acl/token/:AccessorID            read / update / delete
    GET  /v1/acl/token/self     PUT /v1/acl/token/:AccessorID/clone
    PUT  /v1/acl/policy         GET /v1/acl/policies    GET|PUT|DELETE /v1/acl/policy/:id
    GET  /v1/acl/policy/name/:name
    PUT  /v1/acl/role           GET /v1/acl/roles       GET|PUT|DELETE /v1/acl/role/:id
    GET  /v1/acl/role/name/:name
    GET  /v1/acl/templated-policies                     GET /v1/acl/templated-policy/name/:name
    POST /v1/acl/templated-policy/preview/:name
    GET  /v1/internal/tether/acl/resolve                agents: the caller's token as compiled rules

Reads need `acl:read` and writes `acl:write`; a SecretID is shown only to `acl:write`
(`<hidden>` otherwise). `token/self` needs only a valid token. With ACLs off every route
but `token/self` answers 401 `ACL support disabled`, as Consul does.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, json_response, read_json, request_token
from tether.control.acl import ACLService
from tether.core.acl import READ, WRITE
from tether.core.acl_model import TEMPLATES, template_json
from tether.core.errors import AclDisabled, InvalidInput, NotFound


def acl_router(acl: ACLService) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())], tags=["acl"])

    def can(request: Request, access: str) -> None:
        if not acl.enabled:
            raise AclDisabled("ACL support disabled")
        request_acl(request).require("acl", "", access)

    def reveals(request: Request) -> bool:
        return request_acl(request).allowed("acl", "", WRITE)

    # -- bootstrap ------------------------------------------------------------------------

    @r.put("/v1/acl/bootstrap", **needs("none", on="allowed once; then 403 with the reset index"))
    async def bootstrap(request: Request) -> Response:
        body = await read_json(request, required=False) or {}
        if not isinstance(body, dict) or set(body) - {"BootstrapSecret"}:
            raise InvalidInput('Request decode failed: send nothing or {"BootstrapSecret": "<uuid>"}')
        return json_response(await acl.bootstrap(body.get("BootstrapSecret") or None))

    # -- tokens -----------------------------------------------------------------------------

    @r.put("/v1/acl/token", **needs("acl:write"))
    async def token_create(request: Request) -> Response:
        can(request, WRITE)
        return json_response(await acl.create_token(await read_json(request, required=False)))

    @r.get("/v1/acl/token/self", **needs("none", on="any valid token reads itself"))
    async def token_self(request: Request) -> Response:
        if not acl.enabled:
            raise AclDisabled("ACL support disabled")
        token = acl.token_by_secret(request_token(request) or acl.config.default or "anonymous")
        return json_response(acl.read_token(token["AccessorID"], reveal=True))

    @r.get("/v1/acl/tokens", **needs("acl:read"))
    async def token_list(request: Request) -> Response:
        can(request, READ)
        q = request.query_params
        for unsupported in ("authmethod", "ns", "partition"):
            if q.get(unsupported):
                raise InvalidInput(f"{unsupported}: not supported by Tether (no auth methods or namespaces in ACLs)")
        return json_response(acl.list_tokens(policy=q.get("policy", ""), role=q.get("role", ""),
                                             service=q.get("servicename", ""), reveal=reveals(request)))

    @r.get("/v1/acl/token/{accessor}", **needs("acl:read"))
    async def token_read(request: Request, accessor: str) -> Response:
        can(request, READ)
        return json_response(acl.read_token(accessor, reveal=reveals(request)))

    @r.put("/v1/acl/token/{accessor}", **needs("acl:write"))
    async def token_update(request: Request, accessor: str) -> Response:
        can(request, WRITE)
        return json_response(await acl.update_token(accessor, await read_json(request)))

    @r.delete("/v1/acl/token/{accessor}", **needs("acl:write"))
    async def token_delete(request: Request, accessor: str) -> Response:
        can(request, WRITE)
        await acl.delete_token(accessor, caller_secret=request_token(request))
        return json_response(True)

    @r.put("/v1/acl/token/{accessor}/clone", **needs("acl:write"))
    async def token_clone(request: Request, accessor: str) -> Response:
        can(request, WRITE)
        body = await read_json(request, required=False) or {}
        if not isinstance(body, dict) or set(body) - {"Description"}:
            raise InvalidInput('Request decode failed: send {"Description": "..."} or nothing')
        return json_response(await acl.clone_token(accessor, body.get("Description")))

    # -- policies ---------------------------------------------------------------------------

    @r.put("/v1/acl/policy", **needs("acl:write"))
    async def policy_create(request: Request) -> Response:
        can(request, WRITE)
        return json_response(await acl.create_policy(await read_json(request)))

    @r.get("/v1/acl/policies", **needs("acl:read"))
    async def policy_list(request: Request) -> Response:
        can(request, READ)
        return json_response(acl.list_policies())

    @r.get("/v1/acl/policy/name/{name}", **needs("acl:read"))
    async def policy_by_name(request: Request, name: str) -> Response:
        can(request, READ)
        return json_response(acl.read_policy_by_name(name))

    @r.get("/v1/acl/policy/{policy_id}", **needs("acl:read"))
    async def policy_read(request: Request, policy_id: str) -> Response:
        can(request, READ)
        return json_response(acl.read_policy(policy_id))

    @r.put("/v1/acl/policy/{policy_id}", **needs("acl:write"))
    async def policy_update(request: Request, policy_id: str) -> Response:
        can(request, WRITE)
        return json_response(await acl.update_policy(policy_id, await read_json(request)))

    @r.delete("/v1/acl/policy/{policy_id}", **needs("acl:write"))
    async def policy_delete(request: Request, policy_id: str) -> Response:
        can(request, WRITE)
        await acl.delete_policy(policy_id)
        return json_response(True)

    # -- roles ------------------------------------------------------------------------------

    @r.put("/v1/acl/role", **needs("acl:write"))
    async def role_create(request: Request) -> Response:
        can(request, WRITE)
        return json_response(await acl.create_role(await read_json(request)))

    @r.get("/v1/acl/roles", **needs("acl:read"))
    async def role_list(request: Request) -> Response:
        can(request, READ)
        return json_response(acl.list_roles(policy=request.query_params.get("policy", "")))

    @r.get("/v1/acl/role/name/{name}", **needs("acl:read"))
    async def role_by_name(request: Request, name: str) -> Response:
        can(request, READ)
        return json_response(acl.read_role_by_name(name))

    @r.get("/v1/acl/role/{role_id}", **needs("acl:read"))
    async def role_read(request: Request, role_id: str) -> Response:
        can(request, READ)
        return json_response(acl.read_role(role_id))

    @r.put("/v1/acl/role/{role_id}", **needs("acl:write"))
    async def role_update(request: Request, role_id: str) -> Response:
        can(request, WRITE)
        return json_response(await acl.update_role(role_id, await read_json(request)))

    @r.delete("/v1/acl/role/{role_id}", **needs("acl:write"))
    async def role_delete(request: Request, role_id: str) -> Response:
        can(request, WRITE)
        await acl.delete_role(role_id)
        return json_response(True)

    # -- templated policies -----------------------------------------------------------------

    @r.get("/v1/acl/templated-policies", **needs("acl:read"))
    async def templates_list(request: Request) -> Response:
        can(request, READ)
        return json_response({name: template_json(t) for name, t in TEMPLATES.items()})

    @r.get("/v1/acl/templated-policy/name/{name:path}", **needs("acl:read"))
    async def template_read(request: Request, name: str) -> Response:
        can(request, READ)
        return json_response(template_json(_template(name)))

    @r.post("/v1/acl/templated-policy/preview/{name:path}", **needs("acl:read"))
    async def template_preview(request: Request, name: str) -> Response:
        can(request, READ)
        template = _template(name)
        body = await read_json(request, required=False) or {}
        if not isinstance(body, dict) or set(body) - {"Name"}:
            raise InvalidInput('Request decode failed: send {"Name": "<service or node>"}')
        if template.needs_name and not body.get("Name"):
            raise InvalidInput(f"Name: required by {template.name}")
        variable = body.get("Name", "")
        return json_response({"ID": "", "Name": f"synthetic-policy-{template.name.split('/')[-1]}"
                              + (f"-{variable}" if variable else ""),
                              "Description": "synthetic policy generated from templated policy: " + template.name,
                              "Rules": template.render(variable)})

    # -- what agents resolve their callers' tokens with ----------------------------------------

    @r.get("/v1/internal/tether/acl/resolve", include_in_schema=False,
           **needs("none", on="the caller's own token: presenting it is the proof"))
    async def resolve(request: Request) -> Response:
        """The caller's token as compiled rules, so an agent can cache and decide locally."""
        if not acl.enabled:
            return json_response({"Enabled": False})
        secret = request_token(request) or acl.config.default or "anonymous"
        token = acl.token_by_secret(secret)
        management, rules = acl.token_rules(token)
        return json_response({
            "Enabled": True, "AccessorID": token["AccessorID"], "Management": management,
            "ExpirationTime": token.get("ExpirationTime"),
            "Rules": [[r.resource, r.name, r.prefix, r.access, r.policy] for r in rules],
        })

    return r


def _template(name: str):
    template = TEMPLATES.get(name)
    if template is None:
        raise NotFound(f"ACL templated policy not found: {name!r}; known: {', '.join(TEMPLATES)}")
    return template


def parse_resolved(body: dict[str, Any]) -> tuple[bool, list[tuple[str, str, bool, str, str]], str | None]:
    """(management, rules, expiration) from the resolve route's answer (the agent's side)."""
    try:
        rules = [(str(a), str(b), bool(c), str(d), str(e)) for a, b, c, d, e in body["Rules"]]
        return bool(body["Management"]), rules, body.get("ExpirationTime")
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed ACL resolution from the server: {json.dumps(body)[:120]}: {exc}") from None
