"""Linkerd policy kinds (`policy.linkerd.io/*`) translated into Tether server policies.

Server, ServerAuthorization, AuthorizationPolicy, MeshTLSAuthentication and
NetworkAuthentication documents are read into strict models, then resolved across
documents (a policy may precede its Server) into `ServerPolicy` values. What has no
Tether meaning (routes, label expressions, named ports, namespace-wide identity
wildcards, unauthenticatedTLS) is refused with the reason. Called by
core/policy_yaml.py's `parse_policy_documents`; the mapping is in docs/authorization.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tether.core.errors import InvalidInput
from tether.core.policy import SERVER_DEFAULT_POLICY, Authorization, ServerPolicy, invalid_input, make_authorization, parse_default_policy
from tether.core.policy_schema import _Network, _PolicyName, _Strict, messages, nets, register_fields, validate

#: Pod labels that name the workload; a Linkerd Server selecting on one maps to that service.
SERVICE_LABELS = ("app", "app.kubernetes.io/name")


class _K8sMeta(BaseModel):
    # Kubernetes owns metadata and adds fields of its own (uid, resourceVersion, ...): ignore those.
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    namespace: str = "default"


class _LinkerdDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    apiVersion: str
    kind: str
    metadata: _K8sMeta
    spec: dict[str, Any] = {}
    status: Any = None  # written by the cluster; ignored


class _Selector(_Strict):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[Any] | None = None


class _ServerSpec(_Strict):
    podSelector: _Selector | None = None
    externalWorkloadSelector: _Selector | None = None
    port: int | str
    proxyProtocol: Literal["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"] = "unknown"
    accessPolicy: _PolicyName = SERVER_DEFAULT_POLICY.value


class _ServiceAccountRef(_Strict):
    name: str
    namespace: str | None = None


class _MeshTLS(_Strict):
    identities: list[str] | None = None
    serviceAccounts: list[_ServiceAccountRef] | None = None
    unauthenticatedTLS: bool = False


class _Client(_Strict):
    meshTLS: _MeshTLS | None = None
    unauthenticated: bool = False
    networks: list[_Network] = []


class _ServerRef(_Strict):
    name: str | None = None
    selector: _Selector | None = None


class _ServerAuthorizationSpec(_Strict):
    server: _ServerRef
    client: _Client


class _Ref(_Strict):
    group: str | None = None
    kind: str
    name: str
    namespace: str | None = None


class _AuthorizationPolicySpec(_Strict):
    targetRef: _Ref
    requiredAuthenticationRefs: list[_Ref] = []


class _MeshTLSAuthenticationSpec(_Strict):
    identities: list[str] | None = None
    identityRefs: list[_Ref] | None = None


class _NetworkAuthenticationSpec(_Strict):
    networks: list[_Network]


_LINKERD_SPECS: dict[str, type[BaseModel]] = {
    "Server": _ServerSpec,
    "ServerAuthorization": _ServerAuthorizationSpec,
    "AuthorizationPolicy": _AuthorizationPolicySpec,
    "MeshTLSAuthentication": _MeshTLSAuthenticationSpec,
    "NetworkAuthentication": _NetworkAuthenticationSpec,
}

register_fields(*_LINKERD_SPECS.values(), _Client, _MeshTLS, _Ref, _Selector, _LinkerdDoc)


# --- Linkerd kinds ---------------------------------------------------------------------------------
# Read into models first, then resolved across documents (a policy may precede its Server).
# Linkerd's Kubernetes namespaces have no Tether meaning: a service account name becomes
# the Tether service name, and references resolve within the namespace as Linkerd's do.


def parse_linkerd_doc(label: str, doc: dict[str, Any], errors: list[str]) -> tuple[_LinkerdDoc, BaseModel] | None:
    env = validate(_LinkerdDoc, doc, label, "", errors)
    if env is None:
        return None
    if env.kind in ("HTTPRoute", "GRPCRoute"):
        errors.append(f"{label}: {env.kind} is L7 routing; Tether authorizes L4 connections, so routes do not map "
                      "(authorize the whole Server instead)")
        return None
    model = _LINKERD_SPECS.get(env.kind)
    if model is None:
        errors.append(f"{label}: Linkerd kind {env.kind!r} does not map; supported: {', '.join(_LINKERD_SPECS)}")
        return None
    spec = validate(model, env.spec, label, "spec.", errors)
    return None if spec is None else (env, spec)


def translate_linkerd(items: list[tuple[str, _LinkerdDoc, Any]], errors: list[str]) -> list[tuple[str, ServerPolicy]]:
    servers: dict[tuple[str, str], dict[str, Any]] = {}
    authns: dict[tuple[str, str], tuple[str, Any]] = {}
    for label, env, spec in items:
        key = (env.metadata.namespace, env.metadata.name)
        try:
            if isinstance(spec, _ServerSpec):
                servers[key] = {"label": label, "spec": spec, "auths": []}
            elif isinstance(spec, _MeshTLSAuthenticationSpec):
                authns[("MeshTLSAuthentication", *key)] = ("identities", _mesh_tls_identities(spec))  # type: ignore[index]
            elif isinstance(spec, _NetworkAuthenticationSpec):
                authns[("NetworkAuthentication", *key)] = ("networks", nets(spec.networks))  # type: ignore[index]
        except InvalidInput as exc:
            errors.extend(f"{label}: {m}" for m in messages(exc))
    for label, env, spec in items:
        try:
            if isinstance(spec, _ServerAuthorizationSpec):
                _attach(servers, [_server_ref(spec.server, env.metadata.namespace)], _server_authorization(env.metadata.name, spec))
            elif isinstance(spec, _AuthorizationPolicySpec):
                targets = _policy_targets(spec.targetRef, env.metadata.namespace, servers)
                _attach(servers, targets, _authorization_policy(env.metadata.name, env.metadata.namespace, spec, authns))
        except InvalidInput as exc:
            errors.extend(f"{label}: {m}" for m in messages(exc))
    out = []
    for (_, name), server in servers.items():
        try:
            service, port, default = _server_target(server["spec"])
            out.append((server["label"], ServerPolicy(service, port, default, tuple(server["auths"]), name)))
        except InvalidInput as exc:
            errors.extend(f"{server['label']}: {m}" for m in messages(exc))
    return out


def _attach(servers: dict[tuple[str, str], dict[str, Any]], targets: list[tuple[str, str]], auth: Authorization) -> None:
    for target in targets:
        if target not in servers:
            raise InvalidInput(f"Server {target[1]!r} in namespace {target[0]!r} is not among these documents")
        servers[target]["auths"].append(auth)


def _server_target(spec: _ServerSpec) -> tuple[str, int, Any]:
    errors = []
    sel = spec.podSelector
    labels = (sel.matchLabels or {}) if sel else {}
    if spec.externalWorkloadSelector or sel is None or sel.matchExpressions or len(labels) != 1 or next(iter(labels)) not in SERVICE_LABELS:
        errors.append("spec.podSelector: Tether maps a Server to the service named by one matchLabels entry "
                      f"({' or '.join(SERVICE_LABELS)}: <service>); other selectors do not map")
    if isinstance(spec.port, str):
        errors.append(f"spec.port: named port {spec.port!r} does not map (Tether has no pod spec to resolve it); use the number")
    if errors:
        raise invalid_input(errors)
    return next(iter(labels.values())), spec.port, parse_default_policy(spec.accessPolicy, field="spec.accessPolicy")  # type: ignore[return-value]


def _server_ref(ref: _ServerRef, namespace: str) -> tuple[str, str]:
    if ref.selector is not None or not ref.name:
        raise InvalidInput("spec.server: only `name` maps; a Server label selector does not")
    return (namespace, ref.name)


def _policy_targets(ref: _Ref, namespace: str, servers: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
    if ref.kind == "Server":
        return [(ref.namespace or namespace, ref.name)]
    if ref.kind == "Namespace":
        found = [key for key in servers if key[0] == namespace]
        if ref.name != namespace or not found:
            raise InvalidInput(f"spec.targetRef: Namespace {ref.name!r} must be the policy's own and hold a Server in these documents")
        return found
    raise InvalidInput(f"spec.targetRef: kind {ref.kind!r} does not map (L7 routes are not supported); target a Server or Namespace")


def _server_authorization(name: str, spec: _ServerAuthorizationSpec) -> Authorization:
    client, tls = spec.client, spec.client.meshTLS
    if (tls is None) == (not client.unauthenticated):
        raise InvalidInput("spec.client: set exactly one of meshTLS or unauthenticated")
    identities: list[str] = []
    if tls is not None:
        if tls.unauthenticatedTLS:
            raise InvalidInput("spec.client.meshTLS.unauthenticatedTLS does not map: Tether callers either present "
                               "a verified identity or are unauthenticated (use `unauthenticated: true` with networks)")
        if (tls.identities is None) == (tls.serviceAccounts is None):
            raise InvalidInput("spec.client.meshTLS: set exactly one of identities or serviceAccounts")
        identities = [_linkerd_identity(t) for t in tls.identities or ()] + [sa.name for sa in tls.serviceAccounts or ()]
    return make_authorization(name, identities=identities, unauthenticated=client.unauthenticated,
                              networks=nets(client.networks), field="spec.client")


def _authorization_policy(name: str, namespace: str, spec: _AuthorizationPolicySpec, authns: dict) -> Authorization:
    identities: list[list[str]] = []
    networks: list[list[dict[str, Any]]] = []
    for i, ref in enumerate(spec.requiredAuthenticationRefs):
        if ref.kind == "ServiceAccount":
            identities.append([ref.name])
            continue
        found = authns.get((ref.kind, ref.namespace or namespace, ref.name))
        if ref.kind not in ("MeshTLSAuthentication", "NetworkAuthentication"):
            raise InvalidInput(f"spec.requiredAuthenticationRefs[{i}]: kind {ref.kind!r} does not map")
        if found is None:
            raise InvalidInput(f"spec.requiredAuthenticationRefs[{i}]: {ref.kind} {ref.name!r} is not among these documents")
        (identities if found[0] == "identities" else networks).append(found[1])
    if not identities and not networks:
        raise InvalidInput("spec.requiredAuthenticationRefs: list at least one authentication")
    if len(identities) > 1 or len(networks) > 1:
        # Linkerd requires *all* refs; Tether's authorization holds one identity list and one network list.
        raise InvalidInput("spec.requiredAuthenticationRefs: at most one identity (MeshTLSAuthentication or "
                           "ServiceAccount) and one NetworkAuthentication map onto a Tether authorization")
    return make_authorization(name, identities=identities[0] if identities else (), unauthenticated=not identities,
                              networks=networks[0] if networks else (), field="spec")


def _mesh_tls_identities(spec: _MeshTLSAuthenticationSpec) -> list[str]:
    if (spec.identities is None) == (spec.identityRefs is None):
        raise InvalidInput("spec: set exactly one of identities or identityRefs")
    for i, ref in enumerate(spec.identityRefs or ()):
        if ref.kind != "ServiceAccount":
            raise InvalidInput(f"spec.identityRefs[{i}]: kind {ref.kind!r} does not map; only ServiceAccount does")
    return [_linkerd_identity(t) for t in spec.identities or ()] + [r.name for r in spec.identityRefs or ()]


def _linkerd_identity(text: str) -> str:
    """`*` stays `*`; `<sa>.<ns>.serviceaccount.identity.linkerd.<td>` becomes service `<sa>`."""
    if text == "*":
        return text
    labels = text.split(".")
    if len(labels) < 6 or labels[2:5] != ["serviceaccount", "identity", "linkerd"]:
        raise InvalidInput(f"identity {text!r} is not a Linkerd identity "
                           "(<serviceaccount>.<namespace>.serviceaccount.identity.linkerd.<trust-domain>) or '*'")
    if "*" in text:
        raise InvalidInput(f"identity {text!r}: a namespace-wide wildcard has no Tether equivalent (Tether services "
                           "have no Kubernetes namespace); list the services, or use '*' for any authenticated client")
    return labels[0]
