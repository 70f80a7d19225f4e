"""decide(): intentions (Consul) + server policy (Linkerd) + the probe rule.

Each table row cites the documented behaviour it encodes:
  [C-docs]  hashicorp/consul website/content/docs/connect/intentions/index.mdx
  [C-auth]  REFERENCE.md 1.6 (agent/connect_auth.go reasons, default when nothing matches)
  [L-ref]   linkerd/website linkerd.io/content/2-edge/reference/authorization-policy.md
  [L-probe] REFERENCE.md 2.4 (health-probe caveats, linkerd2 #7050)
  [Tether]  docs/authorization.md, where Tether decides something the upstreams do not
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.authz import Decision, Source, build_snapshot, decide
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention
from tether.core.policy import (
    MESH_DEFAULT_POLICY,
    SERVER_DEFAULT_POLICY,
    DefaultPolicy,
    MeshPolicy,
    ServerPolicy,
    make_authorization,
    match_identity,
    parse_identity_pattern,
)
from tether.core.spiffe import SpiffeId

TD = "0f0e0d0c-0000-4000-8000-000000000001.tether"
OTHER_TD = "0f0e0d0c-0000-4000-8000-000000000002.tether"


def me(service: str, td: str = TD, dc: str = "dc1") -> Source:
    return Source(SpiffeId(td, "default", dc, service), "10.1.0.5")


def anon(ip: str = "198.51.100.7") -> Source:
    return Source(None, ip)


I = Intention
A = make_authorization


@dataclass
class Case:
    cite: str
    source: Source
    allowed: bool
    intentions: list[Intention] = field(default_factory=list)
    policies: list[ServerPolicy] = field(default_factory=list)
    default_intention: str = "allow"
    mesh: str = "all-unauthenticated"
    destination: str = "db"
    port: int = 5432
    audit: bool = False
    reason: str | None = None
    cluster: tuple[str, ...] = ()


CASES = [
    # --- Consul intentions ------------------------------------------------------------------------
    Case("[C-docs] precedence 9 (exact) beats 8 (`*` source)", me("web"), True,
         [I("web", "db", "allow"), I("*", "db", "deny")], default_intention="deny",
         reason="intention web -> db (allow, precedence 9)"),
    Case("[C-docs] precedence 8 applies to a source with no exact intention", me("api"), False,
         [I("web", "db", "allow"), I("*", "db", "deny")], reason="intention * -> db (deny, precedence 8)"),
    Case("[C-docs] destination specificity first: 8 (`*` -> db) beats 6 (web -> `*`)", me("web"), False,
         [I("*", "db", "deny"), I("web", "*", "allow")]),
    Case("[C-docs] 6 (web -> `*`) beats 5 (`*` -> `*`)", me("web"), False,
         [I("web", "*", "deny"), I("*", "*", "allow")], reason="intention web -> * (deny, precedence 6)"),
    Case("[C-docs] 5 (`*` -> `*`) applies when nothing more specific does", me("api"), True,
         [I("web", "*", "deny"), I("*", "*", "allow")], default_intention="deny"),
    Case("[C-docs] deny over allow when weighted equally", me("web"), False,
         [I("web", "db", "allow"), I("web", "db", "deny")], reason="intention web -> db (deny, precedence 9)"),
    Case("[C-docs] default_policy allow: connections allowed by default", me("web"), True,
         reason="default policy allow: no intention matched"),
    Case("[C-docs] default_policy deny: connections denied by default", me("web"), False, default_intention="deny",
         reason="default policy deny: no intention matched"),
    Case("[C-docs] intentions for other destinations do not apply", me("web"), False,
         [I("web", "cache", "allow")], default_intention="deny"),
    # --- Linkerd default policies ------------------------------------------------------------------
    Case("[L-ref] all-unauthenticated: allow all traffic", anon(), True, mesh="all-unauthenticated"),
    Case("[L-ref] all-authenticated: meshed clients from a different cluster", me("web", OTHER_TD), True, mesh="all-authenticated"),
    Case("[L-ref] all-authenticated: unmeshed clients are not allowed", anon(), False, mesh="all-authenticated",
         reason="the mesh default policy is all-authenticated: refuses unauthenticated callers"),
    Case("[L-ref] cluster-authenticated: meshed clients in the same cluster", me("web"), True, mesh="cluster-authenticated"),
    Case("[L-ref] cluster-authenticated: not from another cluster (Tether: trust domain)", me("web", OTHER_TD), False,
         mesh="cluster-authenticated"),
    Case("[L-ref] cluster-unauthenticated: non-meshed clients in the same cluster", anon("10.2.3.4"), True,
         mesh="cluster-unauthenticated", cluster=("10.0.0.0/8",)),
    Case("[L-ref] cluster-unauthenticated: not from outside the cluster", anon("198.51.100.1"), False,
         mesh="cluster-unauthenticated", cluster=("10.0.0.0/8",)),
    Case("[L-ref] deny: all traffic is denied", me("web"), False, [I("web", "db", "allow")], mesh="deny",
         reason="the mesh default policy is deny and no authorization matched"),
    Case("[L-ref] audit: same as all-unauthenticated, but flagged", anon(), True, mesh="audit"),
    Case("[L-ref] audit: a would-be denial is flagged, not enforced", me("web"), True, [I("web", "db", "deny")],
         mesh="audit", audit=True, reason="audit: would deny: intention web -> db (deny, precedence 9)"),
    # --- Linkerd Servers and authorizations --------------------------------------------------------
    Case("[L-ref] a Server's traffic is denied unless explicitly authorized", me("web"), False,
         policies=[ServerPolicy("db", 5432)]),
    Case("[L-ref] accessPolicy audit on a Server: unmatched traffic allowed and flagged", me("web"), True,
         [I("*", "db", "deny")], [ServerPolicy("db", 5432, DefaultPolicy.AUDIT)], audit=True),
    Case("[L-ref] MeshTLSAuthentication identities: the named client is authorized", me("web"), True,
         [I("web", "db", "deny")], [ServerPolicy("db", 5432, authorizations=(A("web-ok", identities=["web"]),))],
         reason="authorization web-ok of server policy db-5432 (db:5432)"),
    Case("[L-ref] identities: other clients are not", me("api"), False,
         policies=[ServerPolicy("db", 5432, authorizations=(A("web-ok", identities=["web"]),))]),
    Case("[L-ref] identity `*`: all meshed clients are authorized", me("x", OTHER_TD), True,
         policies=[ServerPolicy("db", 5432, authorizations=(A("all", identities=["*"]),))]),
    Case("[L-ref] identity `*`: unmeshed clients are not", anon(), False,
         policies=[ServerPolicy("db", 5432, authorizations=(A("all", identities=["*"]),))]),
    Case("[L-ref] `*` prefix matches all identities in a domain", me("web", dc="dc2"), True,
         policies=[ServerPolicy("db", 5432, authorizations=(A("dc2", identities=[f"*.dc2.{TD}"]),))]),
    Case("[L-ref] `*` prefix: identities outside the domain do not match", me("web", dc="dc1"), False,
         policies=[ServerPolicy("db", 5432, authorizations=(A("dc2", identities=[f"*.dc2.{TD}"]),))]),
    Case("[L-ref] NetworkAuthentication: clients in a listed network", anon("10.4.0.1"), True,
         policies=[ServerPolicy("db", 5432, authorizations=(A("net", unauthenticated=True, networks=[{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}]),))]),
    Case("[L-ref] network `except`: excluded subnets are not authorized", anon("10.9.0.1"), False,
         policies=[ServerPolicy("db", 5432, authorizations=(A("net", unauthenticated=True, networks=[{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}]),))]),
    Case("[L-probe] 2.11 workaround: unauthenticated + networks for the probe CIDR", anon("192.0.2.10"), True,
         policies=[ServerPolicy("db", 5432, authorizations=(A("kubelet", unauthenticated=True, networks=[{"cidr": "192.0.2.0/24"}]),))]),
    # --- plaintext clients (no TLS ClientHello): only an `unauthenticated` grant admits them -------
    Case("[L-ref] web-public: unauthenticated from 0.0.0.0/0 admits a plaintext client",
         Source(None, "127.0.0.1", plaintext=True), True,
         policies=[ServerPolicy("db", 5432, authorizations=(A("web-public", unauthenticated=True, networks=[{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]),))]),
    Case("[L-ref] a plaintext client outside the authorization's networks is refused",
         Source(None, "127.0.0.1", plaintext=True), False,
         policies=[ServerPolicy("db", 5432, authorizations=(A("lb", unauthenticated=True, networks=[{"cidr": "192.0.2.0/24"}]),))],
         reason="plaintext client (no TLS): server policy db-5432 (db:5432) has no `unauthenticated` authorization "
                "for its address; without one a port accepts mutual TLS only"),
    Case("[Tether] no default policy admits plaintext, not even all-unauthenticated",
         Source(None, "127.0.0.1", plaintext=True), False, mesh="all-unauthenticated"),
    Case("[L-ref] an identity grant (even '*') does not admit a plaintext client",
         Source(None, "127.0.0.1", plaintext=True), False,
         policies=[ServerPolicy("db", 5432, DefaultPolicy.ALL_UNAUTHENTICATED, (A("any", identities=["*"]),))]),
    # --- the probe rule -------------------------------------------------------------------------
    Case("[L-probe] probes are authorized automatically, even under deny", Source(None, "127.0.0.1", probe=True), True,
         [I("*", "*", "deny")], mesh="deny", default_intention="deny",
         reason="agent health probe from a probe network is always allowed"),
    Case("[L-probe] ::1 is a probe network too", Source(None, "::1", probe=True), True, mesh="deny"),
    Case("[Tether] the probe flag from a non-loopback address grants nothing", Source(None, "198.51.100.9", probe=True), False, mesh="deny"),
    # --- where Tether decides ------------------------------------------------------------------------
    Case("[Tether] port policy beats service policy", me("web"), True,
         policies=[ServerPolicy("db", None, DefaultPolicy.DENY), ServerPolicy("db", 5432, DefaultPolicy.ALL_AUTHENTICATED)]),
    Case("[Tether] service policy covers other ports", me("web"), False, port=9999,
         policies=[ServerPolicy("db", None, DefaultPolicy.DENY), ServerPolicy("db", 5432, DefaultPolicy.ALL_AUTHENTICATED)]),
    Case("[Tether] an authorization is final: intentions are not consulted", me("web"), True,
         [I("web", "db", "deny")], [ServerPolicy("db", 5432, authorizations=(A("web", identities=["web"]),))]),
    Case("[Tether] unauthenticated callers match no intention, not even `*`", anon(), False,
         [I("*", "db", "allow")], default_intention="deny",
         reason="default policy deny: caller has no service identity in this mesh, so no intention applies"),
    Case("[Tether] a same-named service of another trust domain is not that service", me("web", OTHER_TD), False,
         [I("web", "db", "allow")], default_intention="deny"),
    Case("[C-auth] intentions are by name: the peer IP does not matter", Source(SpiffeId(TD, "default", "dc1", "web"), "203.0.113.1"), False,
         [I("web", "db", "deny")]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.cite for c in CASES])
def test_documented_behaviour(case: Case) -> None:
    snap = build_snapshot(case.intentions, case.policies, case.default_intention, case.mesh, TD, cluster_networks=case.cluster)
    d = decide(snap, case.source, case.destination, case.port)
    assert (d.allowed, d.audit) == (case.allowed, case.audit), f"{case.cite}: {d.reason}"
    if case.reason is not None:
        assert d.reason == case.reason
    assert d.considered == ()  # only built when asked
    explained = decide(snap, case.source, case.destination, case.port, explain=True)
    assert _outcome(explained) == _outcome(d)
    assert explained.considered


def test_defaults_are_the_documented_ones() -> None:
    # [L-ref] "all-unauthenticated: allow all traffic. This is the default."
    assert MESH_DEFAULT_POLICY is DefaultPolicy.ALL_UNAUTHENTICATED
    # [L-ref] Server accessPolicy "defaults to deny".
    assert SERVER_DEFAULT_POLICY is DefaultPolicy.DENY


def test_explain_lists_each_rule_and_why() -> None:
    snap = build_snapshot([I("web", "db", "allow"), I("*", "db", "deny"), I("api", "*", "allow")], [], "deny", "all-unauthenticated", TD)
    d = decide(snap, me("api"), "db", 5432, explain=True)
    assert not d.allowed and d.rule == I("*", "db", "deny")
    steps = [(c.step, c.matched) for c in d.considered]
    assert steps == [("server-policy", True), ("default-policy", True), ("intention", False), ("intention", True), ("intention", False)]
    assert "source api is not web" in d.considered[2].why
    assert "not reached" in d.considered[4].why


def test_decisions_are_shared_values() -> None:
    # The fast path returns prebuilt Decisions: no allocation per connection.
    snap = build_snapshot([I("web", "db", "allow")], [], "deny", "all-unauthenticated", TD)
    assert decide(snap, me("web"), "db", 1) is decide(snap, me("web"), "db", 2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"default_intention": "permit"}, "'permit' must be 'allow' or 'deny'"),
        ({"mesh_default_policy": "all-authenticatd"}, "unknown default policy 'all-authenticatd'"),
        ({"trust_domain": "Not A Domain"}, "trust domain 'Not A Domain' is invalid"),
        ({"cluster_networks": ["10.0.0.1/8"]}, "cluster networks[0].cidr: '10.0.0.1/8' has host bits set"),
        ({"policies": [ServerPolicy("db", 1), ServerPolicy("db", 1, name="other")]}, "both cover db:1"),
        ({"intentions": ["web -> db"]}, "is not an Intention"),
    ],
)
def test_build_snapshot_validates_and_names_the_value(kwargs: dict, needle: str) -> None:
    args = {"intentions": [], "policies": [], "default_intention": "deny", "mesh_default_policy": "deny", "trust_domain": TD}
    with pytest.raises(InvalidInput) as exc:
        build_snapshot(**{**args, **kwargs})
    assert needle in exc.value.message


def test_snapshot_helpers() -> None:
    p = ServerPolicy("db", None)
    snap = build_snapshot([I("*", "*", "deny"), I("web", "db", "allow"), I("x", "cache", "allow")], [p], "deny", "deny", TD, index=42)
    assert [i.precedence for i in snap.match_destination("db")] == [9, 5]
    assert snap.server_policy("db", 80) is p and snap.server_policy("cache", 80) is None
    assert snap.index == 42
    with pytest.raises(AttributeError):
        snap.trust_domain = "x"  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------------

SERVICES = ["web", "api", "db", "cache"]
svc_or_star = st.sampled_from([*SERVICES, "*"])
intentions_st = st.lists(st.builds(Intention, svc_or_star, svc_or_star, st.sampled_from(["allow", "deny"])), max_size=12)
modes = st.sampled_from([p.value for p in DefaultPolicy])
policies_st = st.lists(
    st.builds(
        lambda svc, port, mode, who, open_to: ServerPolicy(svc, port, DefaultPolicy(mode), (
            ((A("grant", identities=who),) if who else ())
            + ((A("open", unauthenticated=True, networks=[{"cidr": open_to}]),) if open_to else ()))),
        st.sampled_from(SERVICES), st.sampled_from([None, 80]), modes,
        st.lists(st.sampled_from(["web", "*", "spiffe://*/ns/*/dc/dc2/svc/*", f"*.{TD}"]), max_size=2),
        st.sampled_from([None, "127.0.0.0/8", "192.0.2.0/24"]),
    ),
    max_size=4, unique_by=lambda p: (p.service, p.port),
)
sources_st = st.one_of(
    st.builds(lambda s, td, dc: Source(SpiffeId(td, "default", dc, s), "10.0.0.1"), st.sampled_from(SERVICES), st.sampled_from([TD, OTHER_TD]), st.sampled_from(["dc1", "dc2"])),
    st.builds(lambda ip, probe, plain: Source(None, ip, probe, plain), st.sampled_from(["127.0.0.1", "10.0.0.1", "192.0.2.1"]),
              st.booleans(), st.booleans()),
)
world = st.tuples(intentions_st, policies_st, st.sampled_from(["allow", "deny"]), modes)


def _outcome(d: Decision) -> tuple:
    return (d.allowed, d.audit, d.rule, d.reason)


def _snap(w: tuple, shuffle: random.Random | None = None):  # type: ignore[no-untyped-def]
    ints, pols, default, mesh = w
    ints, pols = list(ints), list(pols)
    if shuffle is not None:
        shuffle.shuffle(ints)
        shuffle.shuffle(pols)
    return build_snapshot(ints, pols, default, mesh, TD, cluster_networks=["10.0.0.0/8"])


@settings(max_examples=100, deadline=None)
@given(world, sources_st, st.sampled_from(SERVICES), st.sampled_from([80, 443]), st.randoms(use_true_random=False))
def test_outcome_is_independent_of_rule_order(w, source, dst, port, rnd) -> None:  # type: ignore[no-untyped-def]
    assert _outcome(decide(_snap(w), source, dst, port)) == _outcome(decide(_snap(w, rnd), source, dst, port))


@settings(max_examples=100, deadline=None)
@given(world, sources_st, st.sampled_from(SERVICES), st.sampled_from([80, 443]))
def test_fast_path_agrees_with_explain(w, source, dst, port) -> None:  # type: ignore[no-untyped-def]
    snap = _snap(w)
    assert _outcome(decide(snap, source, dst, port)) == _outcome(decide(snap, source, dst, port, explain=True))


@settings(max_examples=100, deadline=None)
@given(intentions_st, st.sampled_from(SERVICES), st.sampled_from(SERVICES), st.sampled_from(["allow", "deny"]), st.sampled_from(["allow", "deny"]))
def test_an_exact_intention_beats_any_wildcard(ints, src, dst, action, default) -> None:  # type: ignore[no-untyped-def]
    exact = I(src, dst, action)
    others = [i for i in ints if (i.source_name, i.destination_name) != (src, dst)]
    d = decide(build_snapshot([*others, exact], [], default, "all-unauthenticated", TD), me(src), dst, 80)
    assert d.rule == exact and d.allowed is (action == "allow")


@settings(max_examples=50, deadline=None)
@given(sources_st, st.sampled_from(SERVICES), st.sampled_from(["allow", "deny"]))
def test_no_rule_means_the_default(source, dst, default) -> None:  # type: ignore[no-untyped-def]
    d = decide(build_snapshot([], [], default, "all-unauthenticated", TD), source, dst, 80)
    if source.probe and source.ip == "127.0.0.1":
        assert d.allowed and d.rule.name == "agent-probe"
    elif source.plaintext:  # no default admits a client without TLS
        assert d.rule is None and not d.allowed and d.reason.startswith("plaintext client (no TLS)")
    else:
        assert d.rule is None and d.allowed is (default == "allow") and d.reason.startswith(f"default policy {default}")


@settings(max_examples=50, deadline=None)
@given(world, st.sampled_from(SERVICES), st.sampled_from([80, 443]))
def test_the_agents_probe_is_never_blocked(w, dst, port) -> None:  # type: ignore[no-untyped-def]
    assert decide(_snap(w), Source(None, "127.0.0.1", probe=True), dst, port).allowed


# --- the policy model: identity patterns and validation -------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "identity", "expected"),
    [
        ("*", SpiffeId(OTHER_TD, "default", "dc9", "x"), True),
        ("web", SpiffeId(TD, "default", "dc2", "web"), True),
        ("web", SpiffeId(OTHER_TD, "default", "dc1", "web"), False),  # bare names are this mesh's services
        (f"spiffe://{TD}/ns/default/dc/dc1/svc/web", SpiffeId(TD, "default", "dc1", "web"), True),
        (f"spiffe://{TD}/ns/default/dc/dc1/svc/web", SpiffeId(TD, "default", "dc2", "web"), False),
        ("spiffe://*/ns/*/dc/dc2/svc/*", SpiffeId(OTHER_TD, "default", "dc2", "api"), True),
        (f"*.{TD}", SpiffeId(TD, "default", "dc1", "api"), True),
        (f"*.{TD}", SpiffeId(OTHER_TD, "default", "dc1", "api"), False),
        ("*.tether", SpiffeId(OTHER_TD, "default", "dc1", "api"), True),  # label-aligned suffix
        ("*.ether", SpiffeId(OTHER_TD, "default", "dc1", "api"), False),
        (f"api.default.dc1.{TD}", SpiffeId(TD, "default", "dc1", "api"), True),
        ("web", None, False),
    ],
)
def test_identity_patterns(pattern: str, identity: SpiffeId | None, expected: bool) -> None:
    assert match_identity(parse_identity_pattern(pattern), identity, TD) is expected


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        ("we*b", "'*' may only be the whole pattern"),
        ("spiffe://td/ns/default/svc/web", "a SPIFFE pattern is"),
        ("spiffe://td/ns/default/dc/d*/svc/web", "datacenter 'd*' must be one DNS label or '*'"),
        ("spiffe://Bad Domain/ns/a/dc/b/svc/c", "trust domain 'Bad Domain' is invalid"),
        ("*.", "'' is not a valid DNS label"),
        ("a.b.c", "a dotted identity name is '<svc>.<ns>.<dc>.<trust-domain>'"),
        ("web_1", "service name 'web_1' is invalid"),
        ("", "is not an identity pattern"),
    ],
)
def test_bad_identity_patterns_name_the_value(pattern: str, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_identity_pattern(pattern)
    assert needle in exc.value.message


def test_policy_model_validation_reports_every_problem() -> None:
    with pytest.raises(InvalidInput) as exc:
        ServerPolicy("bad_name", 0, "nope", (A("a", identities=["*"]), A("a", identities=["web"])))  # type: ignore[arg-type]
    msg = exc.value.message
    for needle in ("service name 'bad_name'", "port 0", "unknown default policy 'nope'", "name 'a' is used twice"):
        assert needle in msg
    with pytest.raises(InvalidInput) as exc:
        A("Bad Name", identities=["web"], unauthenticated=True, networks=[{"cidr": "10.0.0.0/33"}])
    assert len(exc.value.errors) == 3  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="set exactly one of 'identities'"):
        A("none")
    with pytest.raises(InvalidInput, match="'maybe' must be 'allow' or 'deny'"):
        MeshPolicy(default_intention="maybe")  # type: ignore[arg-type]
