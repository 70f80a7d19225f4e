"""Authorization policy as YAML documents: Tether's own kinds, and the Linkerd kinds that map.

`parse_policy_documents(text)` reads a multi-document YAML stream (PyYAML safe_load
only) into intentions, server policies and the mesh policy. It is strict (an unknown
field is an error naming it, with a "did you mean") and all-or-nothing: every document
is checked, every problem collected, and either everything is returned or one
InvalidInput lists them all (also as `exc.errors`). `parse_policy_objects` does the same
for documents already decoded (the JSON API). Schema and examples: docs/authorization.md.

Tether kinds (`apiVersion: tether.dev/v1`): MeshPolicy, ServerPolicy, ServiceIntentions.
Linkerd kinds (`apiVersion: policy.linkerd.io/*`) are read by core/policy_linkerd.py into
objects of their own (`PolicyDocuments.linkerd`), joined into server policies only when a
snapshot is built (`snapshot_from_documents`), so they may come in any order and any file.

The reverse direction, `format_server_policy` / `format_mesh_policy`, gives the Tether
document for a value: what the control plane stores under `policy/`, what `tether policy
get` prints, and what `parse_policy_objects` reads back unchanged. `snapshot_from_state`
builds a PolicySnapshot from the control plane's authorization state (intentions in
Consul's JSON shape plus policy documents), so the agent, an out-of-process proxy and
the CLI decide from the same inputs with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from tether.core.authz import PolicySnapshot, build_snapshot
from tether.core.cidr import NetworkMatch, parse_network_match
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention, intention_key, parse_state_intentions
from tether.core.k8s_input import expand_documents
from tether.core.namespaces import state_namespaces
from tether.core.nesting import yaml_depth_problem
from tether.core.policy import (
    DEFAULT_INTENTION,
    MESH_DEFAULT_POLICY,
    SERVER_DEFAULT_POLICY,
    Authorization,
    MeshPolicy,
    ServerPolicy,
    make_authorization,
    parse_action,
    parse_default_policy,
)
from tether.core.policy_istio import ISTIO_SECURITY_GROUP, IstioObject, parse_istio_authorization_policy, resolve_istio
from tether.core.policy_linkerd import (
    NAMESPACE_KIND, SERVICE_LABELS, LinkerdObject, parse_linkerd_doc, resolve_linkerd,
)
from tether.core.policy_schema import (
    _ActionName, _Identity, _IntentionName, _Network, _PolicyName, _Port, _ServiceName, _Strict,
    messages, register_fields, validate,
)

__all__ = [
    "LINKERD_GROUP", "SERVICE_LABELS", "all_server_policies", "TETHER_API", "PolicyDocuments", "format_mesh_policy", "format_server_policy",
    "merge_mesh_policy", "parse_policy_documents", "parse_policy_objects", "snapshot_from_documents",
    "snapshot_from_state",
]

TETHER_API = "tether.dev/v1"
LINKERD_GROUP = "policy.linkerd.io"
_API_HINT = (f"authorization policy is {TETHER_API} (MeshPolicy, ServerPolicy, ServiceIntentions) or "
             f"{LINKERD_GROUP}/* (Server, ServerAuthorization, AuthorizationPolicy, MeshTLSAuthentication, "
             "NetworkAuthentication) or Istio's security.istio.io AuthorizationPolicy (its L4 subset); "
             "`tether apply` also takes Istio networking.istio.io kinds")
_API_HINTS = {
    "networking.istio.io": "Istio networking kinds are external-service configuration: apply them with "
                           "`tether apply -f` (or PUT /v1/tether/external-services)",
}
#: The name the mesh settings document carries (there is one per mesh).
MESH_NAME = "mesh"


@dataclass(frozen=True, slots=True)
class PolicyDocuments:
    """What a policy file declares. `mesh` is None when no MeshPolicy document was given;
    `mesh_fields` names the MeshPolicy spec fields the document set, so that applying it
    changes only those (a file that sets `clusterNetworks` must not reset a server's
    `defaultIntention: deny` to the schema default)."""

    intentions: tuple[Intention, ...] = ()
    server_policies: tuple[ServerPolicy, ...] = ()
    mesh: MeshPolicy | None = None
    mesh_fields: frozenset[str] = frozenset()
    linkerd: tuple[LinkerdObject, ...] = ()
    istio: tuple[IstioObject, ...] = ()  # Istio AuthorizationPolicies (core/policy_istio.py)


# --- schemas -----------------------------------------------------------------------------------


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
register_fields(*_TETHER_SPECS.values(), _Authorization, _Source, _Meta, _TetherDoc)


# --- entry points -------------------------------------------------------------------------------


def parse_policy_documents(text: str, *, source: str = "<policy>") -> PolicyDocuments:
    """Parse every document in `text`; return all of them or raise InvalidInput listing every problem."""
    errors: list[str] = []
    docs = _load(text, source, errors)
    return _parse(docs, source, errors)


def parse_policy_objects(documents: Sequence[object], *, source: str = "<policy>",
                         numbers: Sequence[str] | None = None) -> PolicyDocuments:
    """As `parse_policy_documents`, for documents already decoded (e.g. a JSON array).
    `numbers`: the documents' numbers in a larger file they were taken from (already expanded)."""
    numbered = list(zip(numbers, documents)) if numbers is not None else expand_documents(documents)
    return _parse([(n, doc) for n, doc in numbered if doc is not None], source, [])


def _parse(docs: list[tuple[str, Any]], source: str, errors: list[str]) -> PolicyDocuments:
    intentions: list[Intention] = []
    policies: list[tuple[str, ServerPolicy]] = []
    meshes: list[tuple[str, MeshPolicy, frozenset[str]]] = []
    linkerd: list[tuple[str, LinkerdObject]] = []
    istio: list[tuple[str, IstioObject]] = []
    for n, doc in docs:
        label = f"{source}: document {n}"
        if not isinstance(doc, dict):
            errors.append(f"{label}: expected a mapping with apiVersion, kind and spec, got {type(doc).__name__}")
            continue
        label = f"{label} ({' '.join(filter(None, (str(doc.get('kind', '?')), _name_of(doc))))})"
        api = str(doc.get("apiVersion", ""))
        if api == TETHER_API:
            _tether_doc(label, doc, intentions, policies, meshes, errors)
        elif api.split("/")[0] == LINKERD_GROUP or api.startswith("gateway.networking.k8s.io/") or (
                api == "v1" and doc.get("kind") == NAMESPACE_KIND):  # its Linkerd default inbound policy
            parsed = parse_linkerd_doc(label, doc, errors)
            if parsed is not None:
                linkerd.append((label, parsed))
        elif api.split("/")[0] == ISTIO_SECURITY_GROUP:
            if (authz := parse_istio_authorization_policy(label, doc, errors)) is not None:
                istio.append((label, authz))
        else:
            errors.append(f"{label}: apiVersion {api!r} is not supported: {_API_HINTS.get(api.split('/')[0], _API_HINT)}")
    _check_unique(intentions, policies, meshes, [*linkerd, *istio], errors)
    if errors:
        exc = InvalidInput(f"{source}: {len(errors)} problem(s) in policy documents:\n  " + "\n  ".join(errors))
        exc.errors = tuple(errors)  # type: ignore[attr-defined]
        raise exc
    mesh, fields = (meshes[0][1], meshes[0][2]) if meshes else (None, frozenset[str]())
    return PolicyDocuments(tuple(intentions), tuple(p for _, p in policies), mesh, fields, tuple(o for _, o in linkerd),
                           tuple(o for _, o in istio))


def snapshot_from_documents(
    documents: PolicyDocuments, trust_domain: str, *, intentions: Iterable[Intention] = (), index: int | None = None,
    namespaces: Mapping[str, str] | None = None,
) -> PolicySnapshot:
    """A PolicySnapshot from parsed documents (plus intentions from elsewhere, e.g. the store);
    `namespaces` maps services to their namespace (core/namespaces.py)."""
    mesh = documents.mesh or MeshPolicy()
    return build_snapshot(
        (*documents.intentions, *intentions), all_server_policies(documents, trust_domain, namespaces),
        mesh.default_intention, mesh.default_policy,
        trust_domain, cluster_networks=mesh.cluster_networks, probe_networks=mesh.probe_networks, index=index,
        namespaces=namespaces,
    )


def all_server_policies(documents: PolicyDocuments, trust_domain: str,
                        namespaces: Mapping[str, str] | None = None) -> tuple[ServerPolicy, ...]:
    """The Tether server policies plus those the Linkerd objects resolve into (`namespaces`:
    the registered services' namespaces, when known); a Linkerd Server covering a port
    another policy covers raises InvalidInput naming both."""
    taken = [(p.service, p.port) for p in documents.server_policies]
    resolved = resolve_linkerd(documents.linkerd, trust_domain, taken=taken, namespaces=namespaces)
    taken += [(p.service, p.port) for p in resolved.policies]
    istio = resolve_istio(documents.istio, trust_domain, taken=taken)
    if resolved.conflicts or istio.conflicts:
        raise InvalidInput("; ".join((*resolved.conflicts, *istio.conflicts)))
    return (*documents.server_policies, *resolved.policies, *istio.policies)


def merge_mesh_policy(current: MeshPolicy, given: MeshPolicy, fields: Iterable[str]) -> MeshPolicy:
    """`current` with the spec fields named in `fields` taken from `given` (a partial update)."""
    fields = set(fields)
    return MeshPolicy(
        given.default_policy if "defaultPolicy" in fields else current.default_policy,
        given.default_intention if "defaultIntention" in fields else current.default_intention,
        given.cluster_networks if "clusterNetworks" in fields else current.cluster_networks,
        given.probe_networks if "probeNetworks" in fields else current.probe_networks,
    )


def format_server_policy(policy: ServerPolicy) -> dict[str, Any]:
    """The Tether ServerPolicy document for `policy` (parse_policy_objects reads it back)."""
    spec: dict[str, Any] = {"service": policy.service}
    if policy.port is not None:
        spec["port"] = policy.port
    spec["defaultPolicy"] = policy.default_policy.value
    spec["authorizations"] = [_format_authorization(a) for a in policy.authorizations]
    return {"apiVersion": TETHER_API, "kind": "ServerPolicy", "metadata": {"name": policy.name}, "spec": spec}


def format_mesh_policy(mesh: MeshPolicy) -> dict[str, Any]:
    """The Tether MeshPolicy document for `mesh`, every field spelled out."""
    spec = {
        "defaultPolicy": mesh.default_policy.value,
        "defaultIntention": mesh.default_intention,
        "clusterNetworks": [_format_network(n) for n in mesh.cluster_networks],
        "probeNetworks": [_format_network(n) for n in mesh.probe_networks],
    }
    return {"apiVersion": TETHER_API, "kind": "MeshPolicy", "metadata": {"name": MESH_NAME}, "spec": spec}


def _format_authorization(auth: Authorization) -> dict[str, Any]:
    out: dict[str, Any] = {"name": auth.name}
    if auth.unauthenticated:
        out["unauthenticated"] = True
    else:
        out["identities"] = [p.text for p in auth.identities]
    if auth.networks:
        out["networks"] = [_format_network(n) for n in auth.networks]
    return out


def _format_network(net: NetworkMatch) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": str(net.cidr)}
    if net.except_:
        out["except"] = [str(e) for e in net.except_]
    return out


def snapshot_from_state(
    state: Mapping[str, Any], trust_domain: str, *, known: Mapping[tuple[str, int], Intention] | None = None
) -> PolicySnapshot:
    """A PolicySnapshot from the authorization state the control plane serves:

        {"Index": n, "Intentions": [Consul intention objects], "Policies": [ServerPolicy documents],
         "Mesh": MeshPolicy document}

    `known` maps (ID, ModifyIndex) to intentions already parsed (the previous snapshot's),
    so a watcher re-parses only what changed. Raises InvalidInput listing every problem.
    """
    errors: list[str] = []
    intentions = parse_state_intentions(state.get("Intentions"), known, errors)
    try:
        docs = parse_policy_objects([state.get("Mesh"), *(state.get("Policies") or ())], source="policy state")
    except InvalidInput as exc:
        errors.extend(messages(exc))
        docs = PolicyDocuments()
    if errors:
        raise InvalidInput("authorization state: " + "; ".join(errors))
    try:
        namespaces = state_namespaces(state)
    except InvalidInput as exc:
        raise InvalidInput(exc.message) from None
    return snapshot_from_documents(docs, trust_domain, intentions=intentions, index=state.get("Index"),
                                   namespaces=namespaces)


# --- Tether kinds ---------------------------------------------------------------------------------


def _load(text: str, source: str, errors: list[str]) -> list[tuple[str, Any]]:
    docs: list[Any] = []
    too_deep = yaml_depth_problem(text, source)
    if too_deep:
        errors.append(too_deep)
        return []
    try:
        docs.extend(yaml.safe_load_all(text))  # an empty document (a trailing `---`) declares nothing
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        errors.append(f"{source}: YAML does not parse{where}: {getattr(exc, 'problem', None) or exc}")
    return expand_documents(docs)


def _tether_doc(label: str, doc: dict[str, Any], intentions: list, policies: list, meshes: list, errors: list[str]) -> None:
    # Envelope and spec are checked independently so a metadata typo does not hide spec errors.
    envelope = validate(_TetherDoc, doc, label, "", errors)
    kind = doc.get("kind")
    spec_model = _TETHER_SPECS.get(kind) if isinstance(kind, str) else None
    if spec_model is None:
        errors.append(f"{label}: kind {doc.get('kind')!r} is not a Tether kind; use one of {', '.join(_TETHER_SPECS)}")
        return
    spec = validate(spec_model, doc.get("spec") or {}, label, "spec.", errors)
    if envelope is None or spec is None:
        return
    name = envelope.metadata.name
    try:
        if isinstance(spec, _ServerPolicySpec):
            auths = tuple(_authorization(a, f"spec.authorizations[{i}]") for i, a in enumerate(spec.authorizations))
            default = parse_default_policy(spec.defaultPolicy, field="spec.defaultPolicy")
            policies.append((label, ServerPolicy(spec.service, spec.port, default, auths, name or "")))
        elif isinstance(spec, _MeshPolicySpec):
            meshes.append((label, _mesh_policy(spec), frozenset(spec.model_fields_set)))
        elif isinstance(spec, _IntentionsSpec):
            intentions.extend(_intentions(spec, label, errors))
    except InvalidInput as exc:
        errors.extend(f"{label}: {m}" for m in messages(exc))


def _authorization(a: _Authorization, where: str) -> Authorization:
    networks = [{"cidr": n.cidr, "except": n.except_} for n in a.networks]
    return make_authorization(a.name, identities=a.identities, unauthenticated=a.unauthenticated, networks=networks,
                              field=where)


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


def _check_unique(intentions: list[Intention], policies: list, meshes: list, linkerd: list, errors: list[str]) -> None:
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
    for label, *_ in meshes[1:]:
        errors.append(f"{label}: only one MeshPolicy may be given ({meshes[0][0]} is the first)")
    objects: dict[str, str] = {}
    for label, obj in linkerd:
        key = f"{type(obj).__name__} {obj.key}"
        if key in objects:
            errors.append(f"{label}: {obj.namespace}/{obj.name} is declared twice ({objects[key]}); keep one")
        objects.setdefault(key, label)


def _name_of(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


