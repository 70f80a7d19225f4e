"""Authorization policy as YAML documents: Tether's own kinds, and the Linkerd kinds that map.

`parse_policy_documents(text)` reads a multi-document YAML stream (PyYAML safe_load
only) into intentions, server policies and the mesh policy. It is strict (an unknown
field is an error naming it, with a "did you mean") and all-or-nothing: every document
is checked, every problem collected, and either everything is returned or one
InvalidInput lists them all (also as `exc.errors`). Schema and examples: docs/authorization.md.

Tether kinds (`apiVersion: tether.dev/v1`): MeshPolicy, ServerPolicy, ServiceIntentions.
Linkerd kinds (`apiVersion: policy.linkerd.io/*`): Server, ServerAuthorization,
AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication. What has no Tether
meaning (HTTPRoute targets, label-expression selectors, named ports, namespace-wide
identity wildcards, unauthenticatedTLS) is refused with the reason, never dropped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from tether.core.authz import PolicySnapshot, build_snapshot
from tether.core.cidr import parse_network, parse_network_match
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention, intention_key
from tether.core.policy import (
    DEFAULT_INTENTION,
    MESH_DEFAULT_POLICY,
    SERVER_DEFAULT_POLICY,
    Authorization,
    MeshPolicy,
    invalid_input,
    ServerPolicy,
    make_authorization,
    parse_action,
    parse_default_policy,
    parse_identity_pattern,
)
from tether.core.spiffe import validate_service_name

TETHER_API = "tether.dev/v1"
LINKERD_GROUP = "policy.linkerd.io"
#: Pod labels that name the workload; a Linkerd Server selecting on one maps to that service.
SERVICE_LABELS = ("app", "app.kubernetes.io/name")


@dataclass(frozen=True, slots=True)
class PolicyDocuments:
    """What a policy file declares. `mesh` is None when no MeshPolicy document was given."""

    intentions: tuple[Intention, ...] = ()
    server_policies: tuple[ServerPolicy, ...] = ()
    mesh: MeshPolicy | None = None


# --- schemas -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Spelled out (not derived from DefaultPolicy) so a schema error lists the valid values.
_PolicyName = Literal["all-unauthenticated", "all-authenticated", "cluster-authenticated", "cluster-unauthenticated", "deny", "audit"]
_ActionName = Literal["allow", "deny"]
_Port = Field(default=None, ge=1, le=65535)


def _checked(check: Any) -> AfterValidator:
    """Run a domain check inside pydantic, so its errors are collected with the schema's."""

    def run(value: Any) -> Any:
        try:
            check(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value

    return AfterValidator(run)


def _intention_name(value: str) -> None:
    if value != "*":
        if "*" in value:
            raise InvalidInput(f"{value!r}: '*' may only stand alone, not inside a name")
        validate_service_name(value)


_Cidr = Annotated[str, _checked(lambda v: parse_network(v, field=""))]
_Identity = Annotated[str, _checked(lambda v: parse_identity_pattern(v, field=""))]
_ServiceName = Annotated[str, _checked(validate_service_name)]
_IntentionName = Annotated[str, _checked(_intention_name)]


class _Network(_Strict):
    cidr: _Cidr
    except_: list[_Cidr] = Field(default_factory=list, alias="except")


class _Meta(_Strict):
    name: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class _Authorization(_Strict):
    name: str
    identities: list[_Identity] = []
    unauthenticated: bool = False
    networks: list[_Network] = []


class _ServerPolicySpec(_Strict):
    service: _ServiceName
    port: int | None = _Port
    defaultPolicy: _PolicyName = SERVER_DEFAULT_POLICY.value
    authorizations: list[_Authorization] = []


class _MeshPolicySpec(_Strict):
    defaultPolicy: _PolicyName = MESH_DEFAULT_POLICY.value
    defaultIntention: _ActionName = DEFAULT_INTENTION
    clusterNetworks: list[_Network] = []
    probeNetworks: list[_Network] | None = None


class _Source(_Strict):
    name: _IntentionName
    action: _ActionName
    description: str = ""
    meta: dict[str, str] = {}


class _IntentionsSpec(_Strict):
    destination: _IntentionName
    sources: list[_Source]


class _TetherDoc(_Strict):
    apiVersion: Literal["tether.dev/v1"]
    kind: str
    metadata: _Meta = _Meta()
    spec: Any = None  # validated against the kind's own model


_TETHER_SPECS: dict[str, type[BaseModel]] = {
    "MeshPolicy": _MeshPolicySpec,
    "ServerPolicy": _ServerPolicySpec,
    "ServiceIntentions": _IntentionsSpec,
}


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
_KNOWN_FIELDS = sorted(
    {f.alias or n for m in (*_TETHER_SPECS.values(), *_LINKERD_SPECS.values(), _Authorization, _Network, _Source,
                            _Client, _MeshTLS, _Ref, _Selector, _Meta, _TetherDoc, _LinkerdDoc) for n, f in m.model_fields.items()}
)


# --- entry points -------------------------------------------------------------------------------


def parse_policy_documents(text: str, *, source: str = "<policy>") -> PolicyDocuments:
    """Parse every document in `text`; return all of them or raise InvalidInput listing every problem."""
    errors: list[str] = []
    docs = _load(text, source, errors)
    intentions: list[Intention] = []
    policies: list[tuple[str, ServerPolicy]] = []
    meshes: list[tuple[str, MeshPolicy]] = []
    linkerd: list[tuple[str, _LinkerdDoc, BaseModel]] = []
    for n, doc in docs:
        label = f"{source}: document {n}"
        if not isinstance(doc, dict):
            errors.append(f"{label}: expected a mapping with apiVersion, kind and spec, got {type(doc).__name__}")
            continue
        label = f"{label} ({' '.join(filter(None, (str(doc.get('kind', '?')), _name_of(doc))))})"
        api = str(doc.get("apiVersion", ""))
        if api == TETHER_API:
            _tether_doc(label, doc, intentions, policies, meshes, errors)
        elif api.split("/")[0] == LINKERD_GROUP or api.startswith("gateway.networking.k8s.io/"):
            parsed = _linkerd_doc(label, doc, errors)
            if parsed is not None:
                linkerd.append((label, *parsed))
        else:
            errors.append(f"{label}: apiVersion {api!r} is not supported; use {TETHER_API} or {LINKERD_GROUP}/v1beta1")
    policies.extend(_translate_linkerd(linkerd, errors))
    _check_unique(intentions, policies, meshes, errors)
    errors.sort(key=_document_number)  # Linkerd kinds are resolved last; report in file order
    if errors:
        exc = InvalidInput(f"{source}: {len(errors)} problem(s) in policy documents:\n  " + "\n  ".join(errors))
        exc.errors = tuple(errors)  # type: ignore[attr-defined]
        raise exc
    return PolicyDocuments(tuple(intentions), tuple(p for _, p in policies), meshes[0][1] if meshes else None)


def snapshot_from_documents(
    documents: PolicyDocuments, trust_domain: str, *, intentions: Iterable[Intention] = (), index: int | None = None
) -> PolicySnapshot:
    """A PolicySnapshot from parsed documents (plus intentions from elsewhere, e.g. the store)."""
    mesh = documents.mesh or MeshPolicy()
    return build_snapshot(
        (*documents.intentions, *intentions), documents.server_policies, mesh.default_intention, mesh.default_policy,
        trust_domain, cluster_networks=mesh.cluster_networks, probe_networks=mesh.probe_networks, index=index,
    )


# --- Tether kinds ---------------------------------------------------------------------------------


def _load(text: str, source: str, errors: list[str]) -> list[tuple[int, Any]]:
    docs: list[tuple[int, Any]] = []
    try:
        for n, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is not None:  # an empty document (a trailing `---`) declares nothing
                docs.append((n, doc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        errors.append(f"{source}: YAML does not parse{where}: {getattr(exc, 'problem', None) or exc}")
    return docs


def _tether_doc(label: str, doc: dict[str, Any], intentions: list, policies: list, meshes: list, errors: list[str]) -> None:
    # Envelope and spec are checked independently so a metadata typo does not hide spec errors.
    envelope = _validate(_TetherDoc, doc, label, "", errors)
    spec_model = _TETHER_SPECS.get(doc.get("kind"))  # type: ignore[arg-type]
    if spec_model is None:
        errors.append(f"{label}: kind {doc.get('kind')!r} is not a Tether kind; use one of {', '.join(_TETHER_SPECS)}")
        return
    spec = _validate(spec_model, doc.get("spec") or {}, label, "spec.", errors)
    if envelope is None or spec is None:
        return
    name = envelope.metadata.name
    try:
        if isinstance(spec, _ServerPolicySpec):
            auths = tuple(_authorization(a, f"spec.authorizations[{i}]") for i, a in enumerate(spec.authorizations))
            default = parse_default_policy(spec.defaultPolicy, field="spec.defaultPolicy")
            policies.append((label, ServerPolicy(spec.service, spec.port, default, auths, name or "")))
        elif isinstance(spec, _MeshPolicySpec):
            meshes.append((label, _mesh_policy(spec)))
        elif isinstance(spec, _IntentionsSpec):
            intentions.extend(_intentions(spec, label, errors))
    except InvalidInput as exc:
        errors.extend(f"{label}: {m}" for m in _messages(exc))


def _messages(exc: InvalidInput) -> tuple[str, ...]:
    return getattr(exc, "errors", None) or (exc.message,)


def _authorization(a: _Authorization, where: str) -> Authorization:
    nets = [{"cidr": n.cidr, "except": n.except_} for n in a.networks]
    return make_authorization(a.name, identities=a.identities, unauthenticated=a.unauthenticated, networks=nets, field=where)


def _mesh_policy(spec: _MeshPolicySpec) -> MeshPolicy:
    default = parse_default_policy(spec.defaultPolicy, field="spec.defaultPolicy")
    action = parse_action(spec.defaultIntention, field="spec.defaultIntention")
    cluster = tuple(parse_network_match(n.cidr, n.except_, field=f"spec.clusterNetworks[{i}]") for i, n in enumerate(spec.clusterNetworks))
    if spec.probeNetworks is None:
        return MeshPolicy(default, action, cluster)
    probe = tuple(parse_network_match(n.cidr, n.except_, field=f"spec.probeNetworks[{i}]") for i, n in enumerate(spec.probeNetworks))
    return MeshPolicy(default, action, cluster, probe)


def _intentions(spec: _IntentionsSpec, label: str, errors: list[str]) -> list[Intention]:
    out = []
    for i, s in enumerate(spec.sources):
        try:
            out.append(Intention(s.name, spec.destination, s.action, s.description, s.meta))  # type: ignore[arg-type]
        except InvalidInput as exc:
            errors.append(f"{label}: spec.sources[{i}]: {exc.message}")
    return out


def _check_unique(intentions: list[Intention], policies: list, meshes: list, errors: list[str]) -> None:
    seen: dict[str, Intention] = {}
    for i in intentions:
        if i.key in seen:
            errors.append(f"intention {i.source_name} -> {i.destination_name} is declared twice; keep one")
        seen[intention_key(i.source_name, i.destination_name)] = i
    scopes: dict[tuple[str, int | None], str] = {}
    for label, pol in policies:
        key = (pol.service, pol.port)
        if key in scopes:
            errors.append(f"{label}: {pol.scope} already has a server policy ({scopes[key]}); keep one")
        scopes.setdefault(key, label)
    for label, _ in meshes[1:]:
        errors.append(f"{label}: only one MeshPolicy may be given ({meshes[0][0]} is the first)")


def _validate(model: type[BaseModel], data: Any, label: str, prefix: str, errors: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            errors.append(f"{label}: {path}: {_explain_error(err)}")
        return None


def _explain_error(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        close = difflib.get_close_matches(key, _KNOWN_FIELDS, n=1, cutoff=0.7)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return str(err["ctx"]["error"])  # our own domain message, without pydantic's prefix
    return str(err["msg"])


def _document_number(message: str) -> int:
    match = re.search(r": document (\d+)", message)
    return int(match.group(1)) if match else 0


def _name_of(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


# --- Linkerd kinds ---------------------------------------------------------------------------------
# Read into models first, then resolved across documents (a policy may precede its Server).
# Linkerd's Kubernetes namespaces have no Tether meaning: a service account name becomes
# the Tether service name, and references resolve within the namespace as Linkerd's do.


def _linkerd_doc(label: str, doc: dict[str, Any], errors: list[str]) -> tuple[_LinkerdDoc, BaseModel] | None:
    env = _validate(_LinkerdDoc, doc, label, "", errors)
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
    spec = _validate(model, env.spec, label, "spec.", errors)
    return None if spec is None else (env, spec)


def _translate_linkerd(items: list[tuple[str, _LinkerdDoc, Any]], errors: list[str]) -> list[tuple[str, ServerPolicy]]:
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
                authns[("NetworkAuthentication", *key)] = ("networks", _nets(spec.networks))  # type: ignore[index]
        except InvalidInput as exc:
            errors.extend(f"{label}: {m}" for m in _messages(exc))
    for label, env, spec in items:
        try:
            if isinstance(spec, _ServerAuthorizationSpec):
                _attach(servers, [_server_ref(spec.server, env.metadata.namespace)], _server_authorization(env.metadata.name, spec))
            elif isinstance(spec, _AuthorizationPolicySpec):
                targets = _policy_targets(spec.targetRef, env.metadata.namespace, servers)
                _attach(servers, targets, _authorization_policy(env.metadata.name, env.metadata.namespace, spec, authns))
        except InvalidInput as exc:
            errors.extend(f"{label}: {m}" for m in _messages(exc))
    out = []
    for (_, name), server in servers.items():
        try:
            service, port, default = _server_target(server["spec"])
            out.append((server["label"], ServerPolicy(service, port, default, tuple(server["auths"]), name)))
        except InvalidInput as exc:
            errors.extend(f"{server['label']}: {m}" for m in _messages(exc))
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
                              networks=_nets(client.networks), field="spec.client")


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


def _nets(networks: list[_Network]) -> list[dict[str, Any]]:
    return [{"cidr": n.cidr, "except": n.except_} for n in networks]
