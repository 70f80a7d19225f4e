"""The per-connection authorization decision: `decide(snapshot, source, destination, port)`.

This is what the inbound proxy runs for every new connection after the TLS handshake,
what the agent's `/v1/agent/connect/authorize` answers from, and what
`tether intention check --explain` prints. It combines server policy (core/policy.py,
Linkerd's model) with intentions (core/intentions.py, Consul's model) in four steps:

  1. Probe rule. A connection the edge marks as the local agent's health probe
     (`Source.probe`) and that comes from a probe network (loopback by default) is
     allowed, whatever the policy: a deny default must never make a service fail its
     own health checks (Linkerd's kubelet-probe problem, linkerd2 #7050).
  2. Server policy. The most specific policy applies: the one for (service, port), else
     the one for the service, else the mesh default. No merging between levels.
  3. Authorizations. If one of that policy's authorizations matches the caller
     (identity and/or network), the connection is allowed and intentions are NOT
     consulted: an authorization names a port and its clients, the most specific
     statement Tether has. Otherwise the policy's default classifies the caller
     (deny / all-authenticated / cluster-authenticated / ...) and may refuse it here.
  4. Intentions. A caller with a service identity in this mesh's trust domain is
     judged by the highest-precedence intention that matches (source namespace and
     service from its SPIFFE ID, destination namespace and service); with none, by the
     default intention. A caller without such an identity (unauthenticated, or from
     another trust domain) matches no intention, not even `*`, so the default intention
     decides it.

Namespaces (core/namespaces.py): the destination's namespace is the one its registration
names (`PolicySnapshot.namespaces`, `default` for a service not listed there); an
intention or identity pattern naming namespace X matches only callers whose SPIFFE ID
says X, so no rule reaches past its namespace.

A **plaintext** caller (`Source.plaintext`: the inbound proxy saw no TLS ClientHello, so
there is no handshake and no identity) is decided in step 3 alone: only an authorization
with `unauthenticated` whose networks hold the caller's address admits it (Linkerd's
`unauthenticated: true` / NetworkAuthentication); no default policy, audit mode or
intention does, so a service without such a rule stays mutual-TLS only.

Under `audit` a denial from step 4 becomes allowed with `audit=True`. The snapshot
precomputes every index and every Decision at build time, so `decide` is a few dict
lookups and returns a shared, immutable Decision; `explain=True` takes a slower,
separate path that records every rule considered (and must agree with the fast one:
tests/core/test_decide.py checks that with hypothesis).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.core.cidr import LOOPBACK_NETWORKS, NetworkMatch, NetworkSet, parse_network_match
from tether.core.errors import InvalidInput
from tether.core.intentions import ALLOW, WILDCARD, Intention, match_intention, sort_key
from tether.core.policy import (
    Authorization,
    CallerClass,
    DefaultPolicy,
    MeshPolicy,
    PatternKind,
    ServerPolicy,
    default_admits,
    match_identity,
    parse_action,
    parse_default_policy,
)
from tether.core.spiffe import DEFAULT_NAMESPACE, validate_trust_domain

PROBE_AUTHORIZATION_NAME = "agent-probe"
_CLASSES = (CallerClass.UNAUTHENTICATED, CallerClass.LOCAL, CallerClass.FOREIGN)  # codes 0, 1, 2


@dataclass(frozen=True, slots=True)
class Source:
    """Who is calling: the verified SPIFFE ID (None when unauthenticated) and the peer IP.

    `probe` is set by the I/O edge only for the local agent's own health checks.
    """

    identity: Any = None  # tether.core.spiffe.SpiffeId | None
    ip: Any = None  # str | ipaddress.IPv4Address | IPv6Address | None
    probe: bool = False
    plaintext: bool = False  # no TLS at all (no ClientHello): only `unauthenticated` grants admit it


@dataclass(frozen=True, slots=True)
class Consideration:
    """One rule `explain` looked at and why it did or did not match."""

    step: str  # probe | server-policy | authorization | default-policy | intention | default-intention
    rule: Any
    matched: bool
    why: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one connection; `rule` is the Intention or Authorization that
    decided, or None when a default did."""

    allowed: bool
    audit: bool
    rule: Intention | Authorization | None
    reason: str
    considered: tuple[Consideration, ...] = ()


class _Auth:
    """An Authorization compiled for matching: local service names in a set, networks as ranges."""

    __slots__ = ("auth", "any", "services", "others", "networks", "decision")

    def __init__(self, auth: Authorization, label: str) -> None:
        self.auth = auth
        self.any = auth.unauthenticated or any(p.kind is PatternKind.ANY for p in auth.identities)
        # A bare service name is that service of the default namespace (core/policy.py).
        self.services = frozenset(p.service for p in auth.identities if p.kind is PatternKind.SERVICE)
        self.others = tuple(p for p in auth.identities if p.kind in (PatternKind.SPIFFE, PatternKind.SUFFIX))
        self.networks = NetworkSet(auth.networks) if auth.networks else None
        self.decision = Decision(True, False, auth, f"authorization {auth.name} of {label}")

    def match(self, identity: Any, ip: Any, trust_domain: str) -> bool:
        if self.networks is not None and not self.networks.match(ip):
            return False
        if self.auth.unauthenticated:
            return True
        if identity is None:
            return False
        if self.any:
            return True
        if identity.trust_domain == trust_domain and identity.service in self.services \
                and (identity.namespace or DEFAULT_NAMESPACE) == DEFAULT_NAMESPACE:
            return True
        return any(match_identity(p, identity, trust_domain) for p in self.others)

    def why(self, identity: Any, ip: Any, trust_domain: str) -> str:
        if self.networks is not None and not self.networks.match(ip):
            where = "; ".join(str(n) for n in self.auth.networks)
            return f"peer address {ip} is outside {where}" if ip is not None else f"peer address unknown; needs {where}"
        if self.auth.unauthenticated:
            return "grants any caller" + (f" from {ip}" if self.networks is not None else "")
        if identity is None:
            return "caller is unauthenticated; this authorization needs an identity"
        if self.match(identity, ip, trust_domain):
            return f"identity {identity} matches {', '.join(p.text for p in self.auth.identities)}"
        return f"identity {identity} matches none of {', '.join(p.text for p in self.auth.identities)}"


class _Policy:
    """A ServerPolicy (or the mesh default) with its refusal Decisions prebuilt."""

    __slots__ = ("policy", "label", "mode", "audit", "admits", "cluster_unauth", "auths", "open_auths", "refusals",
                 "plaintext_refusal")

    def __init__(self, policy: ServerPolicy | None, mode: DefaultPolicy) -> None:
        self.policy = policy
        self.label = f"server policy {policy.name} ({policy.scope})" if policy else "the mesh default policy"
        self.mode = mode
        self.audit = mode is DefaultPolicy.AUDIT
        # Indexed by caller class code (_CLASSES order): plain tuples, because hashing an
        # Enum member is a Python-level call and this runs per connection.
        self.admits = tuple(default_admits(mode, c, False) for c in _CLASSES)
        self.cluster_unauth = mode is DefaultPolicy.CLUSTER_UNAUTHENTICATED
        self.auths = tuple(_Auth(a, self.label) for a in (policy.authorizations if policy else ()))
        self.open_auths = tuple(a for a in self.auths if a.auth.unauthenticated)  # what can admit plaintext
        self.refusals = tuple(Decision(False, False, None, self._refusal(c)) for c in _CLASSES)
        self.plaintext_refusal = Decision(False, False, None, (
            f"plaintext client (no TLS): {self.label} has no `unauthenticated` authorization for its address; "
            "without one a port accepts mutual TLS only"))

    def _refusal(self, caller: CallerClass) -> str:
        head = f"{self.label} is {self.mode.value}"
        if self.mode is DefaultPolicy.DENY:
            return f"{head} and no authorization matched"
        if self.mode is DefaultPolicy.CLUSTER_UNAUTHENTICATED:
            return f"{head}: refuses {caller.value} callers outside the cluster networks"
        return f"{head}: refuses {caller.value} callers"


_Pair = tuple[Decision, Decision]  # (decision, the same under audit)


@dataclass(frozen=True, slots=True, eq=False)
class PolicySnapshot:
    """Everything `decide` needs, indexed at build time. Immutable: the agent builds a
    new one on every change and swaps the reference (one atomic assignment)."""

    trust_domain: str
    intentions: tuple[Intention, ...]  # in evaluation order (Consul's /match order)
    policies: tuple[ServerPolicy, ...]
    mesh: MeshPolicy
    index: int | None = None  # the store revision this snapshot reflects, if known
    namespaces: Mapping[str, str] = field(default_factory=dict)  # service -> its namespace, when not default
    # (src ns, src, dst ns, dst) -> the deciding pair; either name and namespace may be `*`
    _by_key: dict[tuple[str, str, str, str], _Pair] = field(default_factory=dict, repr=False)
    _by_dst: dict[str, tuple[Intention, ...]] = field(default_factory=dict, repr=False)
    _policies: dict[tuple[str, int | None], _Policy] = field(default_factory=dict, repr=False)
    _mesh: _Policy | None = field(default=None, repr=False)
    _default: _Pair | None = field(default=None, repr=False)
    _default_nosvc: _Pair | None = field(default=None, repr=False)
    _cluster: NetworkSet = field(default_factory=NetworkSet, repr=False)
    _probe: NetworkSet = field(default_factory=NetworkSet, repr=False)
    _probe_decision: Decision | None = field(default=None, repr=False)

    def namespace_of(self, service: str) -> str:
        """The namespace `service` is registered in (`default` unless the state says otherwise)."""
        return self.namespaces.get(service, DEFAULT_NAMESPACE)

    def match_destination(self, destination: str, namespace: str | None = None) -> tuple[Intention, ...]:
        """Intentions that can apply to `destination` (in `namespace`, by default its own), in
        evaluation order (Consul's `/v1/connect/intentions/match?by=destination`)."""
        ns = self.namespace_of(destination) if namespace is None else namespace
        found = self._by_dst.get(destination, ()) + self._by_dst.get(WILDCARD, ())
        return tuple(sorted((i for i in found if i.destination_ns in (ns, WILDCARD)), key=sort_key))

    def match_source(self, source: str, namespace: str | None = None) -> tuple[Intention, ...]:
        """Intentions whose source is `source` (in `namespace`, by default its own) or `*`,
        in evaluation order (`?by=source`)."""
        ns = self.namespace_of(source) if namespace is None else namespace
        return tuple(i for i in self.intentions
                     if i.source_name in (source, WILDCARD) and i.source_ns in (ns, WILDCARD))

    def server_policy(self, service: str, port: int | None) -> ServerPolicy | None:
        """The ServerPolicy that governs (service, port), or None when the mesh default does."""
        pol = self._policies.get((service, port)) or self._policies.get((service, None))
        return pol.policy if pol else None


def build_snapshot(
    intentions: Iterable[Intention],
    policies: Iterable[ServerPolicy],
    default_intention: str,
    mesh_default_policy: str,
    trust_domain: str,
    *,
    cluster_networks: Iterable[NetworkMatch | str] = (),
    probe_networks: Iterable[NetworkMatch | str] = LOOPBACK_NETWORKS,
    index: int | None = None,
    namespaces: Mapping[str, str] | None = None,
) -> PolicySnapshot:
    """Validate and index everything once; raise InvalidInput listing every problem.

    Duplicate intentions for one (source, destination) are tolerated here (the store
    refuses them): deny wins, as at equal precedence. Two server policies for the
    same (service, port) are an error, as overlapping Linkerd Servers are.
    """
    errors: list[str] = []
    td = _check(errors, validate_trust_domain, trust_domain)
    action = _check(errors, parse_action, default_intention)
    mode = _check(errors, lambda v: parse_default_policy(v, field="mesh default policy"), mesh_default_policy)
    cluster = _networks(errors, cluster_networks, "cluster networks")
    probe = _networks(errors, probe_networks, "probe networks")
    ordered = _check_intentions(errors, intentions)
    pols = tuple(policies)
    compiled = _compile_policies(errors, pols)
    if errors:
        raise InvalidInput("cannot build policy snapshot: " + "; ".join(errors))
    mesh = MeshPolicy(mode, action, cluster, probe)
    probe_auth = Authorization(PROBE_AUTHORIZATION_NAME, unauthenticated=True, networks=probe)
    by_key, by_dst = _index(ordered)
    spaces = {k: v for k, v in (namespaces or {}).items() if v != DEFAULT_NAMESPACE}
    return PolicySnapshot(
        td, ordered, pols, mesh, index, spaces, by_key, by_dst, compiled,
        _mesh=_Policy(None, mode),
        _default=_default_pair(action, "no intention matched"),
        _default_nosvc=_default_pair(action, "caller has no service identity in this mesh, so no intention applies"),
        _cluster=NetworkSet(cluster),
        _probe=NetworkSet(probe),
        _probe_decision=Decision(True, False, probe_auth, "agent health probe from a probe network is always allowed"),
    )


def decide(snapshot: PolicySnapshot, source: Source, destination: str, port: int | None, *, explain: bool = False,
           namespace: str | None = None) -> Decision:
    """Allow or deny one new connection from `source` to `destination`:`port` (steps in
    the module docstring); `namespace` is the destination's, by default the one the
    snapshot knows for it. With `explain=True` the Decision lists every rule considered."""
    if explain:
        return _explain(snapshot, source, destination, port, namespace)
    ip = source.ip
    # 1. probe rule
    if source.probe and snapshot._probe.match(ip):
        return snapshot._probe_decision  # type: ignore[return-value]
    # 2. server policy: port, else service, else mesh
    policies = snapshot._policies
    pol = (policies.get((destination, port)) or policies.get((destination, None))) if policies else None
    if pol is None:
        pol = snapshot._mesh
    identity = source.identity
    td = snapshot.trust_domain
    if source.plaintext:  # 3 alone: only an `unauthenticated` grant for this address admits it
        for auth in pol.open_auths:
            if auth.match(None, ip, td):
                return auth.decision
        return pol.plaintext_refusal
    # 3. explicit grants are final; otherwise the default policy may refuse the caller's class
    for auth in pol.auths:
        if auth.match(identity, ip, td):
            return auth.decision
    code = 0 if identity is None else 1 if identity.trust_domain == td else 2
    if not pol.admits[code] and not (pol.cluster_unauth and snapshot._cluster.match(ip)):
        return pol.refusals[code]
    # 4. intentions, by precedence (9 down to 1: core/intentions.py)
    service = identity.service if code == 1 else ""
    if service:
        pair = _lookup(snapshot, identity.namespace or DEFAULT_NAMESPACE, service,
                       snapshot.namespaces.get(destination, DEFAULT_NAMESPACE) if namespace is None else namespace,
                       destination)
    else:
        pair = snapshot._default_nosvc
    return pair[1] if pol.audit else pair[0]  # type: ignore[index]


def _lookup(snapshot: PolicySnapshot, src_ns: str, src: str, dst_ns: str, dst: str) -> _Pair:
    """The pair of the highest-precedence intention for the connection, else the default:
    destination exact, ns/*, */*, and within each the source the same way."""
    by_key = snapshot._by_key
    if by_key:
        for dn, d in ((dst_ns, dst), (dst_ns, WILDCARD), (WILDCARD, WILDCARD)):
            for sn, s in ((src_ns, src), (src_ns, WILDCARD), (WILDCARD, WILDCARD)):
                pair = by_key.get((sn, s, dn, d))
                if pair is not None:
                    return pair
    return snapshot._default  # type: ignore[return-value]


# --- explain: the slow path --------------------------------------------------------------------
# A straightforward re-statement of the four steps over plain lists (no indexes, no prebuilt
# Decisions), recording each rule looked at. Tests hold it equal to the fast path above.


def _explain(snapshot: PolicySnapshot, source: Source, destination: str, port: int | None,
             namespace: str | None) -> Decision:
    seen: list[Consideration] = []
    dst_ns = snapshot.namespace_of(destination) if namespace is None else namespace
    outcome = _explain_steps(snapshot, source, destination, dst_ns, port, seen)
    return Decision(outcome.allowed, outcome.audit, outcome.rule, outcome.reason, tuple(seen))


def _explain_steps(snap: PolicySnapshot, source: Source, dst: str, dst_ns: str, port: int | None,
                   seen: list[Consideration]) -> Decision:
    ident, ip, td = source.identity, source.ip, snap.trust_domain
    # 1. probe rule
    if source.probe:
        hit = snap._probe.match(ip)
        why = f"peer {ip} is {'in' if hit else 'outside'} the probe networks"
        seen.append(Consideration("probe", snap._probe_decision.rule, hit, why))  # type: ignore[union-attr]
        if hit:
            return snap._probe_decision  # type: ignore[return-value]
    # 2. server policy
    pol = snap._policies.get((dst, port)) or snap._policies.get((dst, None)) or snap._mesh
    assert pol is not None
    scope = f"{dst}:{port} or {dst}" if port is not None else dst
    where = "applies" if pol.policy else f"applies: no server policy covers {scope}"
    seen.append(Consideration("server-policy", pol.policy, True, f"{pol.label} ({pol.mode.value}) {where}"))
    if source.plaintext:
        for auth in pol.auths:
            hit = auth.auth.unauthenticated and auth.match(None, ip, td)
            why = auth.why(None, ip, td) if auth.auth.unauthenticated else "needs an identity; a plaintext client has none"
            seen.append(Consideration("authorization", auth.auth, hit, why))
            if hit:
                return auth.decision
        return pol.plaintext_refusal
    # 3. authorizations, then the policy's default
    for auth in pol.auths:
        hit = auth.match(ident, ip, td)
        seen.append(Consideration("authorization", auth.auth, hit, auth.why(ident, ip, td)))
        if hit:
            return auth.decision
    caller = CallerClass.UNAUTHENTICATED if ident is None else CallerClass.LOCAL if ident.trust_domain == td else CallerClass.FOREIGN
    in_cluster = caller is not CallerClass.LOCAL and snap._cluster.match(ip)
    admitted = default_admits(pol.mode, caller, in_cluster)
    cls = caller.value + (" from the cluster networks" if in_cluster else "")
    seen.append(Consideration("default-policy", None, admitted, f"{pol.mode.value} {'admits' if admitted else 'refuses'} {cls} callers"))
    if not admitted:
        return pol.refusals[_CLASSES.index(caller)]
    # 4. intentions, in evaluation order, first match decides
    service = ident.service if caller is CallerClass.LOCAL else ""
    src_ns = (ident.namespace or DEFAULT_NAMESPACE) if service else ""
    caller_name = service if src_ns == DEFAULT_NAMESPACE else f"{src_ns}/{service}"
    decided: Intention | None = None
    for i in snap.match_destination(dst, dst_ns) if service else ():
        hit = match_intention(i, service, dst, src_ns, dst_ns)
        want = f"{i.source_ns}/{i.source_name}" if i.source_ns != DEFAULT_NAMESPACE else i.source_name
        if decided is not None:
            why = f"not reached: {decided} decided first" if hit else f"source {caller_name} is not {want}"
        else:
            why = f"source {caller_name} matches {want}" if hit else f"source {caller_name} is not {want}"
        seen.append(Consideration("intention", i, hit and decided is None, why))
        if hit and decided is None:
            decided = i
    if decided is not None:
        pair = _intention_pair(decided)
    else:
        pair = snap._default if service else snap._default_nosvc  # type: ignore[assignment]
        seen.append(Consideration("default-intention", None, True, pair[0].reason))
    return pair[1] if pol.audit else pair[0]


# --- building ---------------------------------------------------------------------------------


def _check(errors: list[str], check: Any, value: Any) -> Any:
    try:
        return check(value)
    except InvalidInput as exc:
        errors.append(exc.message)
        return None


def _networks(errors: list[str], values: Iterable[NetworkMatch | str], what: str) -> tuple[NetworkMatch, ...]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, NetworkMatch):
            out.append(v)
        else:
            got = _check(errors, lambda x: parse_network_match(x, field=f"{what}[{i}]"), v)
            if got is not None:
                out.append(got)
    return tuple(out)


def _check_intentions(errors: list[str], intentions: Iterable[Intention]) -> tuple[Intention, ...]:
    good = []
    for i, item in enumerate(intentions):
        if isinstance(item, Intention):
            good.append(item)
        else:
            errors.append(f"intentions[{i}]: {item!r} is not an Intention")
    return tuple(sorted(good, key=sort_key))


def _compile_policies(errors: list[str], policies: tuple[ServerPolicy, ...]) -> dict[tuple[str, int | None], _Policy]:
    out: dict[tuple[str, int | None], _Policy] = {}
    for i, pol in enumerate(policies):
        if not isinstance(pol, ServerPolicy):
            errors.append(f"policies[{i}]: {pol!r} is not a ServerPolicy")
            continue
        key = (pol.service, pol.port)
        if key in out:
            errors.append(f"server policies {out[key].policy.name!r} and {pol.name!r} both cover {pol.scope}; keep one")  # type: ignore[union-attr]
            continue
        out[key] = _Policy(pol, pol.default_policy)
    return out


def _index(ordered: tuple[Intention, ...]) -> tuple[Any, ...]:
    by_key: dict[tuple[str, str, str, str], _Pair] = {}
    by_dst: dict[str, list[Intention]] = {}
    # `ordered` is in evaluation order (deny before allow at equal precedence), so the
    # first intention seen for a key is the one that decides: setdefault keeps it.
    for i in ordered:
        by_dst.setdefault(i.destination_name, []).append(i)
        by_key.setdefault((i.source_ns, i.source_name, i.destination_ns, i.destination_name), _intention_pair(i))
    return by_key, {k: tuple(v) for k, v in by_dst.items()}


# Intentions are frozen values and the agent reuses the unchanged ones between snapshots, so
# their Decisions are built once, not on every rebuild (the bulk of a rebuild's cost otherwise).
@functools.lru_cache(maxsize=1 << 16)
def _intention_pair(i: Intention) -> _Pair:
    reason = f"intention {i.source} -> {i.destination} ({i.action}, precedence {i.precedence})"
    decision = Decision(i.action == ALLOW, False, i, reason)
    return decision, (decision if i.action == ALLOW else Decision(True, True, i, f"audit: would deny: {reason}"))


def _default_pair(action: str, why: str) -> _Pair:
    reason = f"default policy {action}: {why}"
    decision = Decision(action == ALLOW, False, None, reason)
    return decision, (decision if action == ALLOW else Decision(True, True, None, f"audit: would deny: {reason}"))

