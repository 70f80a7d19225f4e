"""The server's CA routes: roots, configuration, and the internal signing route agents use.

    GET  /v1/connect/ca/roots            blocking over `ca/roots/`; `?pem=true` gives the PEMs
    GET  /v1/connect/ca/configuration    Consul's shape, never a private key
    PUT  /v1/connect/ca/configuration    change TTL / rate limit, rotate, switch provider
    POST /v1/connect/ca/sign             internal: {"CSR", "Service", "Node"} -> signed leaf

Authorization (api/acl.py): roots need nothing (they are public trust anchors);
the configuration needs `operator:write` to read or change (Consul 1.8.6+); signing needs
`service:write` on the service whose identity is asked for, so a leaf is only ever issued
to a token that may act as that service. The CSR itself is checked by the CA: its SPIFFE
ID must be exactly this trust domain, this datacenter and the named service.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, block, flag, json_response, read_json
from tether.control.ca import ROOTS_PREFIX
from tether.control.server import ControlPlane
from tether.core.errors import InvalidInput

_SIGN_FIELDS = {"CSR", "Service", "Node", "PreviousCertPEM"}


def ca_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])
    ca = cp.ca

    @r.get("/v1/connect/ca/roots", tags=["connect"], **needs("none"))
    async def ca_roots(request: Request) -> Response:
        index = await block(request, cp.store, [ROOTS_PREFIX])
        if flag(request, "pem"):
            return Response(ca.roots_pem(), media_type="application/pem-certificate-chain",
                            headers={"X-Consul-Index": str(index)})
        return json_response(ca.roots_json(), index=index)

    @r.get("/v1/connect/ca/configuration", tags=["connect"], **needs("operator:write"))
    async def ca_get_configuration(request: Request) -> Response:
        request_acl(request).require("operator", "", "write")
        return json_response(ca.config_json())

    @r.put("/v1/connect/ca/configuration", tags=["connect"], **needs("operator:write"))
    async def ca_set_configuration(request: Request) -> Response:
        request_acl(request).require("operator", "", "write")
        await ca.set_config(await read_json(request))
        return json_response(True)

    @r.post("/v1/connect/ca/sign", tags=["internal"], include_in_schema=False,
            **needs("service:write", on="Service: the identity signed"))
    async def ca_sign(request: Request) -> Response:
        body = await read_json(request)
        csr, service = parse_sign_body(body)
        acl = request_acl(request)
        acl.require("service", service, "write")
        # The rate limit's fair share is per token (per client address with ACLs off).
        requester = acl.accessor() or (request.client.host if request.client else "")
        previous = body.get("PreviousCertPEM") if isinstance(body.get("PreviousCertPEM"), str) else None
        return json_response(await ca.sign(csr, service, requester=requester, previous_cert_pem=previous,
                                           namespace=cp.catalog.namespace_of(service)))

    return r


def parse_sign_body(body: object) -> tuple[str, str]:
    """(CSR PEM, service name) from {"CSR": "...", "Service": "web", "Node": "n1"}."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object: {"CSR": "<PEM>", "Service": "<name>", "Node": "<node>"}')
    problems = [f"unknown field {k!r}" for k in sorted(set(body) - _SIGN_FIELDS)]
    for name in ("CSR", "Service"):
        if not isinstance(body.get(name), str) or not body[name]:
            problems.append(f"{name}: missing or not a string")
    if problems:
        raise InvalidInput("sign request refused: " + "; ".join(problems))
    return body["CSR"], body["Service"]
