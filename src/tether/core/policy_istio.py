"""Istio's AuthorizationPolicy (`security.istio.io`), its L4 subset, as stored objects.

Honoured: `selector.matchLabels` naming one service by the workload label (`app` or
`app.kubernetes.io/name`), `action: ALLOW` (the default), and rules of
`from[].source.principals | namespaces | ipBlocks` and `to[].operation.ports`. As in Istio,
a service with ALLOW policies admits a connection only when some rule of one of them
matches it (the policies add up); a rule matches when one of its sources and one of its
operations do (an empty `from` / `to` matches all); `rules` left out allows nothing.

Resolved (like the Linkerd kinds, core/policy_linkerd.py) into Tether server policies:
one for the service (default deny, the rules that name no port) and one per port a rule
names (the same, plus that port's rules). Everything else is refused with its path: DENY,
AUDIT and CUSTOM actions, `when` conditions, L7 operation fields (hosts, methods, paths),
the `not*` fields, request principals, remote IP blocks, `targetRef(s)`, a policy without
a selector (namespace-wide). Namespaces and trust domains are kept as for Linkerd: a
principal `cluster.local/ns/<ns>/sa/<sa>` of the policy's own namespace is service `<sa>`,
one of another namespace is refused, one of another trust domain stays foreign. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.core.errors import InvalidInput
from tether.core.policy import ServerPolicy
from tether.core.policy_linkerd import LINKERD_LOCAL_TRUST_DOMAIN, SERVICE_LABELS, Grant, Identity, Resolution

ISTIO_SECURITY_GROUP = "security.istio.io"
_REFUSED_SPEC = {
    "targetRef": "targets Kubernetes Services or Gateways; use selector.matchLabels naming the service",
    "targetRefs": "targets Kubernetes Services or Gateways; use selector.matchLabels naming the service",
    "provider": "CUSTOM authorization providers do not exist in Tether",
}
_SOURCE_FIELDS = {"principals", "namespaces", "ipBlocks"}
_L7 = {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}


@dataclass(frozen=True, slots=True)
class IstioRule:
    grants: tuple[Grant, ...]  # OR of its sources (one unauthenticated grant for an empty `from`)
    ports: tuple[int, ...] | None  # None: every port


@dataclass(frozen=True, slots=True)
class IstioObject:
    namespace: str
    name: str
    doc: dict[str, Any]
    service: str
    rules: tuple[IstioRule, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_istio_authorization_policy(label: str, doc: dict[str, Any], errors: list[str]) -> IstioObject | None:
    """Read one document on its own; append every problem (with its path) to `errors`."""
    problems: list[str] = []
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    ns, name = str(meta.get("namespace") or "default"), meta.get("name")
    if doc.get("kind") != "AuthorizationPolicy":
        problems.append(f"kind {doc.get('kind')!r} of {ISTIO_SECURITY_GROUP} does not map; only AuthorizationPolicy "
                        "(its L4 subset) does")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: required")
    for key in set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
        problems.append(f"{key}: unknown field")
    for key in spec:
        if key in _REFUSED_SPEC:
            problems.append(f"spec.{key}: {_REFUSED_SPEC[key]}")
        elif key not in ("selector", "action", "rules"):
            problems.append(f"spec.{key}: unknown field")
    action = spec.get("action", "ALLOW")
    if action != "ALLOW":
        problems.append(f"spec.action: {action!r} does not map: Tether server policy only grants (a DENY "
                        "cannot override a grant); write the ALLOW rules that remain")
    service = _selected_service(spec.get("selector"), problems)
    rules = []
    for i, rule in enumerate(spec.get("rules") or ()):
        parsed = _rule(rule, f"spec.rules[{i}]", ns, problems)
        if parsed is not None:
            rules.append(parsed)
    if problems:
        errors.extend(f"{label}: {p}" for p in problems)
        return None
    kept = {"apiVersion": doc["apiVersion"], "kind": "AuthorizationPolicy",
            "metadata": {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")},
            "spec": spec}
    return IstioObject(ns, name, kept, service, tuple(rules))  # type: ignore[arg-type]


def _selected_service(selector: object, problems: list[str]) -> str:
    labels = selector.get("matchLabels") if isinstance(selector, dict) else None
    if not isinstance(labels, dict) or len(labels) != 1 or next(iter(labels)) not in SERVICE_LABELS \
            or set(selector) - {"matchLabels"}:  # type: ignore[arg-type]
        problems.append("spec.selector: Tether maps a policy to the service named by one matchLabels entry "
                        f"({' or '.join(SERVICE_LABELS)}: <service>); a policy without one (namespace-wide) "
                        "does not map")
        return ""
    return str(next(iter(labels.values())))


def _rule(rule: object, where: str, ns: str, problems: list[str]) -> IstioRule | None:
    if not isinstance(rule, dict):
        problems.append(f"{where}: expected a mapping")
        return None
    for key in set(rule) - {"from", "to"}:
        problems.append(f"{where}.{key}: " + ("conditions on request attributes are L7; Tether authorizes "
                                               "connections" if key == "when" else "unknown field"))
    grants: list[Grant] = []
    for j, item in enumerate(rule.get("from") or ()):
        source = item.get("source") if isinstance(item, dict) else None
        if not isinstance(source, dict) or set(item) != {"source"}:
            problems.append(f"{where}.from[{j}]: expected {{source: ...}}")
            continue
        grant = _source(source, f"{where}.from[{j}].source", ns, problems)
        if grant is not None:
            grants.append(grant)
    if not rule.get("from"):
        grants.append(Grant((), ()))  # anyone, from anywhere (Istio: an empty `from` matches every source)
    ports: set[int] | None = None
    for j, item in enumerate(rule.get("to") or ()):
        op = item.get("operation") if isinstance(item, dict) else None
        if not isinstance(op, dict) or set(item) != {"operation"}:
            problems.append(f"{where}.to[{j}]: expected {{operation: ...}}")
            continue
        for key in set(op) - {"ports"}:
            problems.append(f"{where}.to[{j}].operation.{key}: " + (
                "an L7 (HTTP) match; Tether authorizes connections, by port" if key in _L7 else "does not map"))
        for k, port in enumerate(op.get("ports") or ()):
            if not (isinstance(port, str) and port.isdigit() and 1 <= int(port) <= 65535):
                problems.append(f"{where}.to[{j}].operation.ports[{k}]: {port!r} is not a port number")
            else:
                ports = (ports or set()) | {int(port)}
    return IstioRule(tuple(grants), tuple(sorted(ports)) if ports is not None else None)


def _source(source: dict[str, Any], where: str, ns: str, problems: list[str]) -> Grant | None:
    before = len(problems)
    for key in set(source) - _SOURCE_FIELDS:
        problems.append(f"{where}.{key}: does not map (Tether matches principals, namespaces and ipBlocks)")
    identities: list[Identity] = []
    for k, p in enumerate(source.get("principals") or ()):
        identities.append(_principal(p, f"{where}.principals[{k}]", ns, problems))
    namespaces = source.get("namespaces") or ()
    for k, other in enumerate(namespaces):
        if other != ns:
            problems.append(f"{where}.namespaces[{k}]: {other!r} is not the policy's namespace {ns!r}; Tether services "
                            "share one namespace, so callers of another cannot be told apart: refused rather than widened")
    if namespaces and not identities:
        identities.append(Identity(None, ns))  # every service of this mesh
    networks = []
    for k, block in enumerate(source.get("ipBlocks") or ()):
        networks.append((str(block), ()))
    if len(problems) > before:
        return None
    grant = Grant(tuple(identities), tuple(networks))
    try:
        grant.authorization("check", "check.invalid")
    except InvalidInput as exc:
        problems.append(f"{where}: {exc.message}")
        return None
    return grant


def _principal(text: object, where: str, ns: str, problems: list[str]) -> Identity:
    if text == "*":
        return Identity(any_identity=True)
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or "*" in text:  # type: ignore[operator]
        problems.append(f"{where}: {text!r} is not '<trust-domain>/ns/<namespace>/sa/<account>' or '*' "
                        "(prefix and suffix wildcards do not map)")
        return Identity(any_identity=True)
    td, _, other, _, sa = parts
    if td == LINKERD_LOCAL_TRUST_DOMAIN and other != ns:
        problems.append(f"{where}: {text!r} is in namespace {other!r}, not the policy's {ns!r}; refused rather "
                        "than widened (Tether services share one namespace)")
    return Identity(sa, other, None if td == LINKERD_LOCAL_TRUST_DOMAIN else td)


def resolve_istio(objects: Any, trust_domain: str, *, taken: Any = ()) -> Resolution:
    """Join the ALLOW policies per service into server policies (see the module docstring)."""
    by_service: dict[str, list[IstioObject]] = {}
    for o in objects:
        by_service.setdefault(o.service, []).append(o)
    policies, conflicts = [], []
    scopes = {tuple(t) for t in taken}
    for service, objs in by_service.items():
        rules = [(o, i, r) for o in objs for i, r in enumerate(o.rules)]
        ports = sorted({p for _, _, r in rules for p in r.ports or ()})
        for port in (None, *ports):
            if (service, port) in scopes:
                conflicts.append(f"AuthorizationPolicy {objs[0].key} (security.istio.io) covers "
                                 f"{service}{'' if port is None else f':{port}'}, which another policy covers already")
                continue
            auths = [g.authorization(f"{o.name}-r{i}-s{j}", trust_domain)
                     for o, i, r in rules if r.ports is None or (port is not None and port in r.ports)
                     for j, g in enumerate(r.grants)]
            name = "-".join(sorted(o.name for o in objs))[:200]
            policies.append(ServerPolicy(service, port, authorizations=tuple(auths), name=name))
    return Resolution(tuple(policies), (), tuple(conflicts))
