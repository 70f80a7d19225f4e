"""Linkerd policy kinds (`policy.linkerd.io/*`) as stored objects, resolved into server policies.

Server, ServerAuthorization, AuthorizationPolicy, MeshTLSAuthentication and
NetworkAuthentication documents are each read on their own into a `LinkerdObject` (strict
model, every field checked, nothing looked up elsewhere), so they can be applied one file
at a time in any order, as with kubectl. `resolve_linkerd` then joins whatever objects
exist into `ServerPolicy` values when a decision needs them:

  * every ServerAuthorization and AuthorizationPolicy that targets a Server adds an
    authorization to it (Linkerd adds them up); a Server applied again keeps them;
  * an authorization whose Server does not exist yet has no effect (a note says so);
  * an AuthorizationPolicy whose required authentication does not exist authorizes
    nobody, as Linkerd's does (a note says so).

Namespaces and trust domains are kept, never widened (core/namespaces.py). A Linkerd
namespace is the Tether namespace of that name: a Server selects the services of its own
namespace only; an identity `<sa>.<ns>.serviceaccount.identity.linkerd.cluster.local` or a
service account `{name, namespace}` is service `<sa>` of namespace `<ns>` in this mesh's
trust domain (`spiffe://<td>/ns/<ns>/dc/*/svc/<sa>`), and `*.<ns>.serviceaccount...` is
every service of `<ns>`. An identity in another trust domain stays in it
(`spiffe://<td>/ns/<ns>/dc/*/svc/<sa>`): it matches only callers of that foreign domain.
A `Namespace` document (`apiVersion: v1`) with the `config.linkerd.io/default-inbound-
policy` annotation gives every service of the namespace that default for the ports no
Server covers (Linkerd's per-namespace default). The mapping is in docs/authorization.md.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tether.core.errors import InvalidInput
from tether.core.named_ports import PORT_META_PREFIX
from tether.core.policy import (
    SERVER_DEFAULT_POLICY, Authorization, DefaultPolicy, ServerPolicy, check_object_name, invalid_input,
    make_authorization, parse_default_policy, parse_identity_pattern,
)
from tether.core.spiffe import validate_namespace
from tether.core.policy_schema import _Network, _PolicyName, _Strict, messages, nets, register_fields, validate

_PORT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: Pod labels that name the workload; a Linkerd Server selecting on one maps to that service.
SERVICE_LABELS = ("app", "app.kubernetes.io/name")
#: Linkerd's default identity trust domain: identities in it are this mesh's.
LINKERD_LOCAL_TRUST_DOMAIN = "cluster.local"
LINKERD_KINDS = ("Server", "ServerAuthorization", "AuthorizationPolicy", "MeshTLSAuthentication", "NetworkAuthentication")
#: A Kubernetes Namespace document carries Linkerd's per-namespace default inbound policy.
NAMESPACE_KIND = "Namespace"
DEFAULT_INBOUND_POLICY = "config.linkerd.io/default-inbound-policy"
#: Linkerd annotations that configure its proxy's injection or runtime, not who may connect.
_PROXY_ANNOTATIONS = ("linkerd.io/", "config.linkerd.io/", "config.alpha.linkerd.io/")


class _K8sMeta(BaseModel):
    # Kubernetes owns metadata and adds fields of its own (uid, resourceVersion, ...): ignore those.
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


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


class _NamespaceSpec(_Strict):
    finalizers: list[str] = []  # Kubernetes' own (namespace deletion): nothing for Tether to do


_LINKERD_SPECS: dict[str, type[BaseModel]] = dict(zip((*LINKERD_KINDS, NAMESPACE_KIND), (
    _ServerSpec, _ServerAuthorizationSpec, _AuthorizationPolicySpec, _MeshTLSAuthenticationSpec,
    _NetworkAuthenticationSpec, _NamespaceSpec,
)))

register_fields(*_LINKERD_SPECS.values(), _Client, _MeshTLS, _Ref, _Selector, _LinkerdDoc)


# --- values: one per object, independent of every other object ----------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """A client identity as Linkerd wrote it, namespace and trust domain kept.
    `service=None` is every service account of the namespace; `any_identity` is `*`."""

    service: str | None = None
    namespace: str = ""
    trust_domain: str | None = None  # None: this mesh's (Linkerd's cluster.local)
    any_identity: bool = False

    def pattern(self, trust_domain: str) -> str:
        """The Tether identity pattern (core/policy.py) for this mesh's `trust_domain`:
        always one namespace, so the rule reaches no caller of another."""
        if self.any_identity:
            return "*"
        return f"spiffe://{self.trust_domain or trust_domain}/ns/{self.namespace}/dc/*/svc/{self.service or '*'}"


@dataclass(frozen=True, slots=True)
class ServerValue:
    """`services`: the services the podSelector names; None is every service (`matchLabels: {}`)."""

    services: tuple[str, ...] | None
    port: int | str
    default_policy: DefaultPolicy
    labels: tuple[tuple[str, str], ...] = ()  # the Server's own metadata.labels (for selectors)


@dataclass(frozen=True, slots=True)
class Grant:
    """Who an authorization admits: identities (empty = unauthenticated) from networks."""

    identities: tuple[Identity, ...]
    networks: tuple[tuple[str, tuple[str, ...]], ...]  # (cidr, except)

    def authorization(self, name: str, trust_domain: str) -> Authorization:
        return make_authorization(name, identities=[i.pattern(trust_domain) for i in self.identities],
                                  unauthenticated=not self.identities,
                                  networks=[{"cidr": c, "except": list(e)} for c, e in self.networks])


@dataclass(frozen=True, slots=True)
class ServerAuthorizationValue:
    server: str | None  # a Server by name, or
    selector: tuple[tuple[str, str], ...] | None  # every Server of the namespace with these labels
    grant: Grant


@dataclass(frozen=True, slots=True)
class AuthorizationPolicyValue:
    target_kind: str  # Server | Namespace
    target: tuple[str, str]  # (namespace, name)
    identity_ref: tuple[str, str, str] | None  # (kind, namespace, name) of a MeshTLSAuthentication
    service_account: Identity | None  # a ServiceAccount ref, resolved in place
    network_ref: tuple[str, str, str] | None  # (kind, namespace, name) of a NetworkAuthentication


@dataclass(frozen=True, slots=True)
class NamespaceValue:
    """A Namespace document: the default inbound policy of its services (None: the mesh's)."""

    default_policy: DefaultPolicy | None


@dataclass(frozen=True, slots=True)
class LinkerdObject:
    """One applied Linkerd document: `doc` is its stored (re-appliable) form, `value` its meaning."""

    kind: str
    namespace: str
    name: str
    doc: dict[str, Any]
    value: Any
    notes: tuple[str, ...] = ()  # what is accepted with a changed form but the same meaning

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def parse_linkerd_doc(label: str, doc: dict[str, Any], errors: list[str]) -> LinkerdObject | None:
    """Read one document on its own; append every problem (with its path) to `errors`."""
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
    if spec is None:
        return None
    if env.kind == NAMESPACE_KIND:
        return _namespace_object(label, env, spec, errors)  # type: ignore[arg-type]
    ns = env.metadata.namespace
    try:
        value = _VALUES[env.kind](spec, ns, env.metadata.labels)
    except InvalidInput as exc:
        errors.extend(f"{label}: {m}" for m in messages(exc))
        return None
    meta: dict[str, Any] = {"name": env.metadata.name, "namespace": ns}
    if env.metadata.labels:
        meta["labels"] = dict(env.metadata.labels)
    stored = {"apiVersion": env.apiVersion, "kind": env.kind, "metadata": meta, "spec": doc.get("spec") or {}}
    notes: tuple[str, ...] = ()
    if isinstance(spec, _ServerSpec) and spec.proxyProtocol not in ("unknown", "opaque"):
        notes = (f"{env.kind} {ns}/{env.metadata.name}: spec.proxyProtocol {spec.proxyProtocol!r} is carried as opaque "
                 "TCP: Tether authorizes connections, so who may connect is as written, but nothing is "
                 "protocol-aware",)
    return LinkerdObject(env.kind, ns, env.metadata.name, stored, value, notes)


def _namespace_object(label: str, env: _LinkerdDoc, spec: _NamespaceSpec, errors: list[str]) -> LinkerdObject | None:
    """A Kubernetes Namespace: its `config.linkerd.io/default-inbound-policy` annotation is
    the default of its services; other Linkerd annotations configure Linkerd's proxy
    injection and runtime, which Tether's sidecars (one per registration) do not read:
    `linkerd.io/inject` is a note, any other is refused rather than ignored."""
    name, annotations = env.metadata.name, env.metadata.annotations
    policy, notes, bad = None, [], []
    for key, value in sorted(annotations.items()):
        if key == DEFAULT_INBOUND_POLICY:
            try:
                policy = parse_default_policy(value, field=f"metadata.annotations[{key!r}]")
            except InvalidInput as exc:
                bad.append(exc.message)
        elif key == "linkerd.io/inject":
            notes.append(f"Namespace {name}: metadata.annotations['linkerd.io/inject'] is not needed: a Tether "
                         "service gets its sidecar from its registration (Connect.SidecarService)")
        elif key.startswith(_PROXY_ANNOTATIONS):
            bad.append(f"metadata.annotations[{key!r}]: Linkerd proxy configuration does not map onto Tether; "
                       f"only {DEFAULT_INBOUND_POLICY} does")
    try:
        check_object_name(name, field="metadata.name")
        validate_namespace(name)
    except InvalidInput as exc:
        bad.append(f"metadata.name: {exc.message}")
    if bad:
        errors.extend(f"{label}: {m}" for m in bad)
        return None
    meta: dict[str, Any] = {"name": name}
    kept = {k: v for k, v in annotations.items() if k == DEFAULT_INBOUND_POLICY}
    if kept:
        meta["annotations"] = kept
    if spec.finalizers:
        notes.append(f"Namespace {name}: spec.finalizers are Kubernetes' own (namespace deletion); Tether has "
                     "nothing to finalize")
    if policy is None:
        notes.append(f"Namespace {name}: no {DEFAULT_INBOUND_POLICY} annotation, so its services keep the mesh "
                     "default policy")
    stored = {"apiVersion": env.apiVersion, "kind": NAMESPACE_KIND, "metadata": meta}
    return LinkerdObject(NAMESPACE_KIND, name, name, stored, NamespaceValue(policy), tuple(notes))


def _server(spec: _ServerSpec, _ns: str, labels: dict[str, str]) -> ServerValue:
    errors = []
    services = _selected_services(spec)
    if services is False:
        errors.append("spec.podSelector: Tether maps a Server to services by the workload label "
                      f"({' or '.join(SERVICE_LABELS)}): one matchLabels entry, a matchExpressions `In` on it, "
                      "or `podSelector: {}` (every service of the namespace); other selectors do not map")
    if isinstance(spec.port, str):
        if not _PORT_NAME.match(spec.port):
            errors.append(f"spec.port: {spec.port!r} is neither a port number nor a port name (letters, digits, '-')")
    elif not 1 <= spec.port <= 65535:
        errors.append(f"spec.port: {spec.port} is not a port number (1-65535)")
    if errors:
        raise invalid_input(errors)
    return ServerValue(services, spec.port, parse_default_policy(spec.accessPolicy, field="spec.accessPolicy"),  # type: ignore[arg-type]
                       tuple(sorted(labels.items())))


def _selected_services(spec: _ServerSpec) -> tuple[str, ...] | None | bool:
    """The services a podSelector names, None for every one, False when it does not map."""
    sel = spec.podSelector
    if spec.externalWorkloadSelector or sel is None:
        return False
    labels, exprs = sel.matchLabels or {}, sel.matchExpressions or []
    if not labels and not exprs:  # `podSelector: {}` or `matchLabels: {}`: every pod (Kubernetes' empty selector)
        return None
    if labels and exprs or len(labels) > 1 or len(exprs) > 1:
        return False
    if labels:
        key, value = next(iter(labels.items()))
        return (value,) if key in SERVICE_LABELS else False
    expr = exprs[0]
    if not isinstance(expr, dict) or expr.get("key") not in SERVICE_LABELS or expr.get("operator") != "In" or set(expr) - {"key", "operator", "values"}:
        return False
    values = expr.get("values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        return False
    return tuple(values)


def _server_authorization(spec: _ServerAuthorizationSpec, ns: str, _labels: Any) -> ServerAuthorizationValue:
    ref = spec.server
    selector = None
    if (ref.name is None) == (ref.selector is None):
        raise InvalidInput("spec.server: set exactly one of name or selector")
    if ref.selector is not None:
        if ref.selector.matchExpressions or not ref.selector.matchLabels:
            raise InvalidInput("spec.server.selector: only matchLabels (one or more labels every selected Server "
                               "carries) maps; matchExpressions do not")
        selector = tuple(sorted(ref.selector.matchLabels.items()))
    client, tls = spec.client, spec.client.meshTLS
    if (tls is None) == (not client.unauthenticated):
        raise InvalidInput("spec.client: set exactly one of meshTLS or unauthenticated")
    identities: list[Identity] = []
    if tls is not None:
        if tls.unauthenticatedTLS:
            raise InvalidInput("spec.client.meshTLS.unauthenticatedTLS does not map: Tether callers either present "
                               "a verified identity or are unauthenticated (use `unauthenticated: true` with networks)")
        if (tls.identities is None) == (tls.serviceAccounts is None):
            raise InvalidInput("spec.client.meshTLS: set exactly one of identities or serviceAccounts")
        identities = _identities(tls.identities or (), "spec.client.meshTLS.identities")
        identities += [_service_account(sa.name, sa.namespace, ns, f"spec.client.meshTLS.serviceAccounts[{i}]")
                       for i, sa in enumerate(tls.serviceAccounts or ())]
    grant = _grant(identities, client.networks, "spec.client")
    return ServerAuthorizationValue(ref.name, selector, grant)


#: The API group each referenced kind lives in (a ref may leave `group` out).
_GROUPS = {"Server": "policy.linkerd.io", "MeshTLSAuthentication": "policy.linkerd.io",
           "NetworkAuthentication": "policy.linkerd.io", "Namespace": "core", "ServiceAccount": "core"}


def _check_groups(spec: _AuthorizationPolicySpec) -> None:
    refs = [("spec.targetRef", spec.targetRef)]
    refs += [(f"spec.requiredAuthenticationRefs[{i}]", r) for i, r in enumerate(spec.requiredAuthenticationRefs)]
    errors = [f"{where}.group: {r.group!r} is not the group of {r.kind} ({_GROUPS[r.kind]!r}, or leave it out)"
              for where, r in refs if r.kind in _GROUPS and r.group not in (None, "", _GROUPS[r.kind])]
    if errors:
        raise invalid_input(errors)


def _authorization_policy(spec: _AuthorizationPolicySpec, ns: str, _labels: Any) -> AuthorizationPolicyValue:
    _check_groups(spec)
    ref = spec.targetRef
    if ref.kind == "Namespace":
        if ref.name != ns:
            raise InvalidInput(f"spec.targetRef: Namespace {ref.name!r} must be the policy's own ({ns!r})")
    elif ref.kind != "Server":
        raise InvalidInput(f"spec.targetRef: kind {ref.kind!r} does not map (L7 routes are not supported); target a Server or Namespace")
    identity_refs: list[tuple[str, str, str]] = []
    accounts: list[Identity] = []
    network_refs: list[tuple[str, str, str]] = []
    for i, r in enumerate(spec.requiredAuthenticationRefs):
        where = f"spec.requiredAuthenticationRefs[{i}]"
        if r.kind == "ServiceAccount":
            accounts.append(_service_account(r.name, r.namespace, ns, where))
        elif r.kind == "MeshTLSAuthentication":
            identity_refs.append((r.kind, r.namespace or ns, r.name))
        elif r.kind == "NetworkAuthentication":
            network_refs.append((r.kind, r.namespace or ns, r.name))
        else:
            raise InvalidInput(f"{where}: kind {r.kind!r} does not map")
    if not spec.requiredAuthenticationRefs:
        raise InvalidInput("spec.requiredAuthenticationRefs: list at least one authentication")
    if len(identity_refs) + len(accounts) > 1 or len(network_refs) > 1:
        # Linkerd requires *all* refs; Tether's authorization holds one identity list and one network list.
        raise InvalidInput("spec.requiredAuthenticationRefs: at most one identity (MeshTLSAuthentication or "
                           "ServiceAccount) and one NetworkAuthentication map onto a Tether authorization")
    return AuthorizationPolicyValue(ref.kind, (ref.namespace or ns, ref.name), identity_refs[0] if identity_refs else None,
                                    accounts[0] if accounts else None, network_refs[0] if network_refs else None)


def _mesh_tls_authentication(spec: _MeshTLSAuthenticationSpec, ns: str, _labels: Any) -> tuple[Identity, ...]:
    if (spec.identities is None) == (spec.identityRefs is None):
        raise InvalidInput("spec: set exactly one of identities or identityRefs")
    out = _identities(spec.identities or (), "spec.identities")
    for i, ref in enumerate(spec.identityRefs or ()):
        if ref.kind != "ServiceAccount":
            raise InvalidInput(f"spec.identityRefs[{i}]: kind {ref.kind!r} does not map; only ServiceAccount does")
        out.append(_service_account(ref.name, ref.namespace, ns, f"spec.identityRefs[{i}]"))
    return tuple(out)


def _network_authentication(spec: _NetworkAuthenticationSpec, _ns: str, _labels: Any) -> Grant:
    return _grant([], spec.networks, "spec")


_VALUES = {
    "Server": _server, "ServerAuthorization": _server_authorization, "AuthorizationPolicy": _authorization_policy,
    "MeshTLSAuthentication": _mesh_tls_authentication, "NetworkAuthentication": _network_authentication,
}


def _grant(identities: list[Identity], networks: list[_Network], where: str) -> Grant:
    grant = Grant(tuple(identities), tuple((c["cidr"], tuple(c["except"])) for c in nets(networks)))
    grant.authorization("check", "check.invalid")  # validates the networks now, with the document's path
    return grant


def _identities(texts: Any, where: str) -> list[Identity]:
    out, errors = [], []
    for i, text in enumerate(texts):
        try:
            out.append(_linkerd_identity(text))
        except InvalidInput as exc:
            errors.append(f"{where}[{i}]: {exc.message}")
    if errors:
        raise invalid_input(errors)
    return out


def _service_account(name: str, namespace: str | None, ns: str, where: str) -> Identity:
    """Service `name` of `namespace` (the document's own when the ref names none)."""
    try:
        return _checked(Identity(service=name, namespace=namespace or ns))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}") from None


def _linkerd_identity(text: str) -> Identity:
    """`*`, or `<sa|*>.<ns>.serviceaccount.identity.<linkerd-ns>.<td>` with namespace and td kept."""
    if text == "*":
        return Identity(any_identity=True)
    labels = text.split(".")
    if len(labels) < 6 or labels[2:4] != ["serviceaccount", "identity"]:
        raise InvalidInput(f"identity {text!r} is not a Linkerd identity "
                           "(<serviceaccount>.<namespace>.serviceaccount.identity.linkerd.<trust-domain>) or '*'")
    sa, namespace, td = labels[0], labels[1], ".".join(labels[5:])
    if ("*" in sa and sa != "*") or "*" in ".".join(labels[1:]):
        raise InvalidInput(f"identity {text!r}: only the whole service-account label may be '*'")
    local = td == LINKERD_LOCAL_TRUST_DOMAIN
    return _checked(Identity(None if sa == "*" else sa, namespace, None if local else td))


def _checked(identity: Identity) -> Identity:
    """Raise InvalidInput unless the identity makes a valid Tether pattern (service name, trust domain)."""
    parse_identity_pattern(identity.pattern("check.invalid"), field="")
    return identity


# --- resolution: the objects that exist, joined ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolution:
    policies: tuple[ServerPolicy, ...]
    notes: tuple[str, ...]  # objects that exist but have no effect yet, and why
    conflicts: tuple[str, ...]  # Servers that cover a port another Server covers


def resolve_linkerd(objects: Any, trust_domain: str, *, taken: Any = (),
                    named_ports: Mapping[tuple[str, str], tuple[int, ...]] | None = None,
                    namespaces: Mapping[str, str] | None = None) -> Resolution:
    """Join objects into server policies. `taken`: (service, port) scopes that a Tether
    ServerPolicy already covers (a Server there is a conflict, as is a second Server for
    one port: the first in `objects` keeps it). `named_ports` (core/named_ports.py) maps
    (service, name) to numbers: a Server's named port becomes a policy per number; a name
    no instance defines is a note (the Server has no effect until one does). `namespaces`:
    every registered service's namespace. A Server selects services of its own namespace
    only, and a Namespace's default inbound policy covers that namespace's registered
    services (except where a Tether ServerPolicy for the whole service is in `taken`: the
    per-service default wins). None (a file read offline): a selected service is taken to
    be in the Server's namespace, and namespace defaults cover nothing yet."""
    by_key = {(o.kind, o.namespace, o.name): o for o in objects}
    ordered = list(by_key.values())  # given order: of two overlapping Servers the first stays
    servers = {(o.namespace, o.name): o for o in ordered if o.kind == "Server"}
    grants: dict[tuple[str, str], list[tuple[str, Authorization]]] = {k: [] for k in servers}
    notes: list[str] = []
    for o in ordered:
        if o.kind == "ServerAuthorization":
            grant: Grant | None = o.value.grant
            if o.value.server is not None:
                targets = [(o.namespace, o.value.server)]
            else:
                want = set(o.value.selector)
                targets = [k for k, srv in servers.items() if k[0] == o.namespace and want <= set(srv.value.labels)]
                if not targets:
                    labels = ", ".join(f"{k}={v}" for k, v in o.value.selector)
                    notes.append(f"{o.kind} {o.namespace}/{o.name}: no Server of namespace {o.namespace!r} has the "
                                 f"labels {labels}, so it has no effect until one does")
        elif o.kind == "AuthorizationPolicy":
            grant = _policy_grant(o, by_key, notes)
            if o.value.target_kind == "Namespace":
                targets = [k for k in servers if k[0] == o.namespace]
                if not targets:
                    notes.append(f"{o.kind} {o.namespace}/{o.name}: namespace {o.namespace!r} has no Server yet, "
                                 "so it authorizes nothing until one is applied")
            else:
                targets = [o.value.target]
        else:
            continue
        for target in targets:
            if target not in servers:
                notes.append(f"{o.kind} {o.namespace}/{o.name}: Server {target[1]!r} (namespace {target[0]!r}) does "
                             "not exist, so it has no effect until that Server is applied")
            elif grant is not None:
                grants[target].append((o.kind, grant.authorization(o.name, trust_domain)))
    policies, conflicts = [], []
    scopes = {tuple(t): "a Tether ServerPolicy" for t in taken}
    for key, server in servers.items():
        value = server.value
        found = _scopes(value, key[0], named_ports or {}, namespaces, notes, f"Server {key[0]}/{key[1]}")
        for service, number in found:
            scope = (service, number)
            if scope in scopes:
                conflicts.append(f"Server {key[0]}/{key[1]} covers {service}:{number}, which {scopes[scope]} "
                                 "covers already; keep one")
                continue
            scopes[scope] = f"Server {key[0]}/{key[1]}"
            policies.append(ServerPolicy(service, number, value.default_policy, _unique(grants[key]), key[1]))
        if isinstance(value.port, str) and not found:
            which = f"service {value.services[0]!r}" if value.services and len(value.services) == 1 else "the selected services"
            notes.append(f"Server {key[0]}/{key[1]}: spec.port {value.port!r}: no instance of {which} names that port "
                         f"(registration Meta {PORT_META_PREFIX}{value.port}), so it has no effect until one does")
    policies += _namespace_defaults(ordered, namespaces, scopes)
    return Resolution(tuple(policies), tuple(notes), tuple(conflicts))


def _namespace_defaults(ordered: list[LinkerdObject], namespaces: Mapping[str, str] | None,
                        scopes: Mapping[tuple[str, int | None], str]) -> list[ServerPolicy]:
    """A whole-service policy with the namespace's default for each registered service of a
    Namespace that has one; ports a Server covers keep the Server's (more specific) policy."""
    out = []
    for o in ordered:
        if o.kind != NAMESPACE_KIND or o.value.default_policy is None:
            continue
        for service in sorted(s for s, ns in (namespaces or {}).items() if ns == o.name):
            if (service, None) not in scopes:  # a Tether ServerPolicy for the whole service: its own default
                out.append(ServerPolicy(service, None, o.value.default_policy, (), f"namespace.{o.name}"))
    return out


def _scopes(value: ServerValue, ns: str, named_ports: Mapping[tuple[str, str], tuple[int, ...]],
            namespaces: Mapping[str, str] | None, notes: list[str], what: str) -> list[tuple[str, int]]:
    """The (service, port number) pairs a Server of namespace `ns` covers: its services of that
    namespace (every registered one for `matchLabels: {}`), each with its number or the
    numbers its named port resolves to. A selected service of another namespace is a note."""
    if value.services is not None:
        services: Any = value.services
    elif isinstance(value.port, str):
        services = sorted({svc for svc, name in named_ports if name == value.port})
    else:
        services = sorted(namespaces or ())
    if namespaces is not None:
        elsewhere = [s for s in services if namespaces.get(s, ns) != ns]
        if value.services is not None:
            notes.extend(f"{what}: service {s!r} is registered in namespace {namespaces[s]!r}, not {ns!r}, so this "
                         "Server does not select it" for s in elsewhere)
        services = [s for s in services if s not in elsewhere]
    if isinstance(value.port, int):
        return [(svc, value.port) for svc in services]
    return [(svc, n) for svc in services for n in named_ports.get((svc, value.port), ())]


def _policy_grant(o: LinkerdObject, by_key: dict, notes: list[str]) -> Grant | None:
    """The AuthorizationPolicy's grant, or None (it admits nobody) when a required
    authentication is missing: Linkerd denies in that case too."""
    v: AuthorizationPolicyValue = o.value
    identities: tuple[Identity, ...] = (v.service_account,) if v.service_account else ()
    networks: tuple[Any, ...] = ()
    for ref in filter(None, (v.identity_ref, v.network_ref)):
        found = by_key.get(ref)
        if found is None:
            notes.append(f"{o.kind} {o.namespace}/{o.name}: {ref[0]} {ref[2]!r} (namespace {ref[1]!r}) does not exist, "
                         "so this policy authorizes nobody until it is applied")
            return None
        if ref[0] == "MeshTLSAuthentication":
            identities = found.value
        else:
            networks = found.value.networks
    return Grant(identities, networks)


def _unique(grants: list[tuple[str, Authorization]]) -> tuple[Authorization, ...]:
    """Authorization names are unique per policy; a ServerAuthorization and an
    AuthorizationPolicy may share a name in Linkerd, so the later gets its kind as prefix."""
    seen: set[str] = set()
    out = []
    for kind, auth in grants:
        if auth.name in seen:
            auth = Authorization(f"{kind.lower()}.{auth.name}", auth.identities, auth.unauthenticated, auth.networks)
        seen.add(auth.name)
        out.append(auth)
    return tuple(out)
