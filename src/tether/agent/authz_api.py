"""The agent's authorization endpoints, answered from its local cache (agent/authz_cache.py).

    POST /v1/agent/connect/authorize        Consul's: {Target, ClientCertURI, ClientCertSerial}
                                            -> {Authorized, Reason}; never forwarded to a server
    GET  /v1/agent/connect/authz-snapshot   Tether's: the inputs of the agent's PolicySnapshot
                                            (blocking on ?index=), so an out-of-process proxy can
                                            build the same snapshot (core.policy_yaml.snapshot_from_state)
                                            and run `core.authz.decide` itself

`authorize` takes three optional Tether fields besides Consul's: `Port` (the destination
port, for per-port server policy), `ClientAddr` (the caller's address, for network
authorizations; with it, an empty `ClientCertURI` means a plaintext caller, decided as the
inbound proxy decides a client that sent no TLS), and
`Probe` (set by the proxy only for the local agent's own health checks arriving from
loopback; see "The probe rule" in docs/authorization.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.agent.agent import Agent
from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, blocking_params, json_response, read_json
from tether.control.intentions_api import authz_scope, scoped_state
from tether.core.authz import Source
from tether.core.cidr import parse_ip
from tether.core.errors import InvalidInput, Unavailable
from tether.core.spiffe import SpiffeKind, parse_spiffe_id, validate_namespace, validate_service_name

_FIELDS = ("Target", "ClientCertURI", "ClientCertSerial", "Namespace", "Port", "ClientAddr", "Probe")


def authz_router(agent: Agent) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])

    @r.post("/v1/agent/connect/authorize", tags=["connect"], **needs("service:write", on="Target"))
    async def authorize(request: Request) -> Response:
        source, target, port, namespace = parse_authorize(await read_json(request))
        request_acl(request).require("service", target, "write")
        decision = agent.authz.decide(source, target, port, namespace=namespace)
        return json_response({"Authorized": decision.allowed, "Reason": decision.reason})

    @r.get("/v1/agent/connect/authz-snapshot", tags=["connect"],
           **needs("intentions:read", on="all; with ?service=S, intentions:read or service:write on S"))
    async def authz_snapshot(request: Request) -> Response:
        scope = authz_scope(request)  # refused before any wait; never filtered (see authz_scope)
        index, wait = blocking_params(request)
        if index > 0:
            await agent.authz.wait_for_change(index, wait)
        cache = agent.authz
        if cache.snapshot is None:  # a proxy keeps what it has rather than learn an empty policy
            raise Unavailable(f"the agent has no authorization state yet: {cache.refused or 'loading'}")
        state = scoped_state(cache.state, scope)
        return json_response({**state, "TrustDomain": cache.trust_domain}, index=cache.index or 1)

    return r


def parse_authorize(body: Any) -> tuple[Source, str, int | None, str | None]:
    """(caller, target service, port, target namespace or None for the one it is registered
    in) from an authorize request body; Consul's error texts."""
    if not isinstance(body, dict):
        raise InvalidInput("Request decode failed: send a JSON object with Target and ClientCertURI")
    folded = {k.lower(): k for k in _FIELDS}
    args: dict[str, Any] = {}
    for key, value in body.items():
        name = folded.get(key.lower()) if isinstance(key, str) else None
        if name is None:
            raise InvalidInput(f"Request decode failed: unknown field {key!r}")
        args[name] = value
    target = args.get("Target")
    if not target:
        raise InvalidInput("Target service must be specified")
    try:
        validate_service_name(target)
    except InvalidInput as exc:
        raise InvalidInput(f"Target: {exc.message}") from None
    namespace = args.get("Namespace") or None  # Consul Enterprise's: the Target's namespace
    if namespace is not None:
        try:
            validate_namespace(namespace)
        except InvalidInput as exc:
            raise InvalidInput(f"Namespace: {exc.message}") from None
    addr = args.get("ClientAddr")
    if addr is not None:
        addr = str(parse_ip(addr))
    uri = args.get("ClientCertURI") or ""
    identity = None
    if uri:
        try:
            identity = parse_spiffe_id(uri)
        except InvalidInput as exc:
            raise InvalidInput(f"ClientCertURI not a valid Connect identifier: {exc.message}") from None
        if identity.kind is not SpiffeKind.SERVICE:
            raise InvalidInput(f"ClientCertURI not a valid Service identifier: {uri!r} names no service")
    elif addr is None:
        raise InvalidInput("ClientCertURI not a valid Connect identifier: it is empty (for an unauthenticated "
                           "caller send ClientAddr instead)")
    port = args.get("Port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise InvalidInput(f"Port: {port!r} must be a number from 1 to 65535")
    probe = args.get("Probe", False)
    if not isinstance(probe, bool):
        raise InvalidInput(f"Probe: {probe!r} must be true or false")
    return Source(identity, addr, probe, plaintext=identity is None), target, port, namespace
