"""PolicySnapshot from the agent's authorization state, without loading pydantic.

`GET /v1/agent/connect/authz-snapshot` answers `{"Index", "TrustDomain", "Intentions":
[Consul intention objects], "Policies": [ServerPolicy documents], "Mesh": MeshPolicy
document}`. `core.policy_yaml.snapshot_from_state` reads any such state, but it imports
the pydantic schema of the YAML front end (about 10 MB of the proxy's 35 MB idle budget,
and ~60 ms of a CLI command's start). The control plane stores policy documents only in the canonical form that
`policy_yaml.format_server_policy` / `format_mesh_policy` write, so the proxy (and `tether intention check`) reads that
form directly with the same pure constructors (`core.policy`, `core.intentions`) and
`core.authz.build_snapshot`, the same way `snapshot_from_documents` does. Anything that is
not exactly that form falls back to `snapshot_from_state` (imported only then), so the
two can never disagree; tests/integration/test_proxy_units.py holds them equal.
"""

from __future__ import annotations

from typing import Any, Mapping

from tether.core.authz import PolicySnapshot, build_snapshot
from tether.core.cidr import parse_network_match
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention, parse_state_intentions
from tether.core.namespaces import state_namespaces
from tether.core.policy import (
    SERVER_DEFAULT_POLICY, MeshPolicy, ServerPolicy, make_authorization, parse_action, parse_default_policy,
)

_API = "tether.dev/v1"
_SERVER_KEYS = frozenset({"service", "port", "defaultPolicy", "authorizations"})
_AUTH_KEYS = frozenset({"name", "identities", "unauthenticated", "networks"})
_MESH_KEYS = frozenset({"defaultPolicy", "defaultIntention", "clusterNetworks", "probeNetworks"})
_NET_KEYS = frozenset({"cidr", "except"})


class NotCanonical(Exception):
    """The state holds a document this reader does not handle; use the full parser."""


def snapshot_from_agent_state(state: Mapping[str, Any], trust_domain: str, *,
                              known: Mapping[tuple[Any, Any], Intention] | None = None) -> PolicySnapshot:
    """A PolicySnapshot equal in every decision to `policy_yaml.snapshot_from_state(state, td)`.

    `known` maps (ID, ModifyIndex) to already parsed intentions. Raises InvalidInput
    naming every problem, exactly like the full parser."""
    try:
        return _read(state, trust_domain, known or {})
    except NotCanonical:
        from tether.core.policy_yaml import snapshot_from_state  # the full (pydantic) front end

        return snapshot_from_state(state, trust_domain, known=known)  # type: ignore[arg-type]


def _read(state: Mapping[str, Any], td: str, known: Mapping[tuple[Any, Any], Intention]) -> PolicySnapshot:
    errors: list[str] = []
    intentions = parse_state_intentions(state.get("Intentions"), known, errors)
    policies = []
    for n, doc in enumerate(state.get("Policies") or ()):
        spec = _spec(doc, "ServerPolicy", _SERVER_KEYS)
        try:
            policies.append(_server_policy(spec, doc["metadata"].get("name") or "", f"Policies[{n}]"))
        except InvalidInput as exc:
            errors.append(exc.message)
    mesh = MeshPolicy()
    if state.get("Mesh"):
        try:
            mesh = _mesh(_spec(state["Mesh"], "MeshPolicy", _MESH_KEYS))
        except InvalidInput as exc:
            errors.append(f"Mesh: {exc.message}")
    if errors:
        raise InvalidInput("authorization state: " + "; ".join(errors))
    return build_snapshot(intentions, policies, mesh.default_intention, mesh.default_policy, td,
                          cluster_networks=mesh.cluster_networks, probe_networks=mesh.probe_networks,
                          index=state.get("Index"), namespaces=state_namespaces(state))


def _spec(doc: Any, kind: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping) or doc.get("apiVersion") != _API or doc.get("kind") != kind:
        raise NotCanonical(kind)
    if set(doc) - {"apiVersion", "kind", "metadata", "spec"} or not isinstance(doc.get("metadata"), Mapping):
        raise NotCanonical(kind)
    spec = doc.get("spec")
    if not isinstance(spec, Mapping) or set(spec) - keys:
        raise NotCanonical(kind)
    return spec


def _networks(raw: Any) -> tuple[Any, ...]:
    if not isinstance(raw, list) or any(not isinstance(n, Mapping) or set(n) - _NET_KEYS for n in raw):
        raise NotCanonical("networks")
    return tuple(parse_network_match(n.get("cidr"), tuple(n.get("except") or ())) for n in raw)


def _server_policy(spec: Mapping[str, Any], name: str, where: str) -> ServerPolicy:
    auths = []
    for i, a in enumerate(spec.get("authorizations") or ()):
        if not isinstance(a, Mapping) or set(a) - _AUTH_KEYS:
            raise NotCanonical("authorization")
        nets = a.get("networks") or []
        _networks(nets)  # shape check only: make_authorization parses them
        auths.append(make_authorization(a.get("name"), identities=a.get("identities") or (),
                                        unauthenticated=bool(a.get("unauthenticated")), networks=nets,
                                        field=f"{where}.spec.authorizations[{i}]"))
    port = spec.get("port")
    default = parse_default_policy(spec.get("defaultPolicy", SERVER_DEFAULT_POLICY), field=f"{where}.spec.defaultPolicy")
    return ServerPolicy(spec.get("service", ""), port, default, tuple(auths), name)


def _mesh(spec: Mapping[str, Any]) -> MeshPolicy:
    base = MeshPolicy()
    default = parse_default_policy(spec.get("defaultPolicy", base.default_policy), field="spec.defaultPolicy")
    action = parse_action(spec.get("defaultIntention", base.default_intention), field="spec.defaultIntention")
    cluster = _networks(spec.get("clusterNetworks") or [])
    if spec.get("probeNetworks") is None:
        return MeshPolicy(default, action, cluster)
    return MeshPolicy(default, action, cluster, _networks(spec["probeNetworks"]))
