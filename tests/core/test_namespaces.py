"""Namespaces and trust domains are kept, never widened (issue 11 item 3): intentions with
Consul's SourceNS/DestinationNS and nine precedences, Linkerd identities, service accounts,
Servers and per-namespace defaults, all decided by core.authz.decide. The hypothesis
properties state the rule itself: a rule naming namespace X changes no decision for a
caller (or destination) of another namespace."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.authz import Source, build_snapshot, decide
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention, compute_precedence, format_intention, intention_key, parse_intention
from tether.core.namespaces import namespace_conflict, parse_ns_param
from tether.core.policy import DefaultPolicy, ServerPolicy, make_authorization
from tether.core.policy_linkerd import resolve_linkerd
from tether.core.policy_yaml import parse_policy_documents, snapshot_from_documents
from tether.core.spiffe import SpiffeId

TD = "0f0e0d0c-0000-4000-8000-000000000001.tether"
NAMESPACES = ("default", "team-a", "team-b")
SERVICES = ("web", "db", "api")


def caller(name: str, ns: str = "default", td: str = TD) -> Source:
    return Source(SpiffeId(td, ns, "dc1", name), "10.0.0.1")


def snap_of(intentions=(), policies=(), default="deny", mode="all-unauthenticated", namespaces=None):
    return build_snapshot(intentions, policies, default, mode, TD, namespaces=namespaces)


# --- intentions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("src_ns", "src", "dst_ns", "dst", "precedence"), [
    ("team-a", "web", "team-b", "db", 9), ("team-a", "*", "team-b", "db", 8), ("*", "*", "team-b", "db", 7),
    ("team-a", "web", "team-b", "*", 6), ("team-a", "*", "team-b", "*", 5), ("*", "*", "team-b", "*", 4),
    ("team-a", "web", "*", "*", 3), ("team-a", "*", "*", "*", 2), ("*", "*", "*", "*", 1),
    ("default", "web", "default", "db", 9), ("default", "*", "default", "*", 5),  # Consul CE's values unchanged
])
def test_precedence_is_consuls_nine_levels(src_ns, src, dst_ns, dst, precedence) -> None:
    assert compute_precedence(src, dst, src_ns, dst_ns) == precedence
    assert Intention(src, dst, "allow", source_ns=src_ns, destination_ns=dst_ns).precedence == precedence


def test_consul_json_keeps_the_namespaces_and_old_documents_are_default() -> None:
    i = parse_intention({"SourceNS": "team-a", "SourceName": "web", "DestinationName": "db", "Action": "allow"})
    assert (i.source_ns, i.destination_ns) == ("team-a", "default")
    assert format_intention(i)["SourceNS"] == "team-a" and format_intention(i)["DestinationNS"] == "default"
    old = parse_intention({"SourceName": "web", "DestinationName": "db", "Action": "deny"})
    assert (old.source_ns, old.destination_ns, old.key) == ("default", "default", "web/db")  # the stored key form
    assert i.key == "team-a/web/default/db" != intention_key("web", "db")


@pytest.mark.parametrize(("body", "says"), [
    ({"SourceNS": "*", "SourceName": "web"}, "SourceNS '*' needs the name '*'"),
    ({"DestinationNS": "Team_A"}, "DestinationNS: namespace 'Team_A' is invalid"),
])
def test_bad_namespaces_are_refused_naming_the_field(body, says) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_intention({"SourceName": "web", "DestinationName": "db", "Action": "allow", **body})
    assert says in exc.value.message


def test_an_intention_decides_only_inside_the_namespaces_it_names() -> None:
    allow = Intention("web", "db", "allow", source_ns="team-a", destination_ns="team-b")
    snap = snap_of([allow], namespaces={"db": "team-b"})
    assert decide(snap, caller("web", "team-a"), "db", 5432).allowed
    assert not decide(snap, caller("web", "team-b"), "db", 5432).allowed  # same name, other namespace
    assert not decide(snap, caller("web"), "db", 5432).allowed  # the default namespace is a namespace too
    assert not decide(snap_of([allow]), caller("web", "team-a"), "db", 5432).allowed  # db registered in default


def test_namespace_wildcards_rank_below_the_exact_namespace() -> None:
    deny_all_a = Intention("*", "db", "deny", source_ns="team-a")  # 8: every service of team-a -> db
    allow_any = Intention("*", "db", "allow", source_ns="*")  # 7: everyone -> db
    snap = snap_of([deny_all_a, allow_any])
    assert not decide(snap, caller("web", "team-a"), "db", 1).allowed
    assert decide(snap, caller("web", "team-b"), "db", 1).allowed
    explained = decide(snap, caller("web", "team-a"), "db", 1, explain=True)
    assert explained.rule is deny_all_a and "team-a/web" in " ".join(c.why for c in explained.considered)


def test_a_bare_service_pattern_is_the_default_namespace() -> None:
    pol = ServerPolicy("db", None, DefaultPolicy.DENY, (make_authorization("web", identities=["web"]),))
    snap = snap_of(policies=[pol])
    assert decide(snap, caller("web"), "db", 1).allowed
    assert not decide(snap, caller("web", "team-a"), "db", 1).allowed


# --- Linkerd ------------------------------------------------------------------------------------

SERVER = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: db, namespace: team-a}
spec: {podSelector: {matchLabels: {app: db}}, port: 5432}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: clients, namespace: team-a}
spec:
  server: {name: db}
  client: {meshTLS: {CLIENTS}}
"""


def linkerd(clients: str, namespaces=None):
    docs = parse_policy_documents(SERVER.replace("CLIENTS", clients))
    return snapshot_from_documents(docs, TD, namespaces=namespaces)


@pytest.mark.parametrize(("clients", "admitted", "refused"), [
    ("identities: [web.team-a.serviceaccount.identity.linkerd.cluster.local]",
     [("web", "team-a", TD)], [("web", "team-b", TD), ("web", "default", TD), ("api", "team-a", TD)]),
    ("identities: [web.team-b.serviceaccount.identity.linkerd.cluster.local]",  # another namespace: kept as written
     [("web", "team-b", TD)], [("web", "team-a", TD)]),
    ("identities: ['*.team-a.serviceaccount.identity.linkerd.cluster.local']",  # the namespace jail
     [("web", "team-a", TD), ("api", "team-a", TD)], [("web", "team-b", TD), ("web", "default", TD)]),
    ("serviceAccounts: [{name: web}]", [("web", "team-a", TD)], [("web", "team-b", TD)]),
    ("serviceAccounts: [{name: web, namespace: team-b}]", [("web", "team-b", TD)], [("web", "team-a", TD)]),
    ("identities: [web.team-a.serviceaccount.identity.linkerd.east.example.org]",  # a foreign trust domain
     [("web", "team-a", "east.example.org")], [("web", "team-a", TD)]),
])
def test_linkerd_identities_keep_namespace_and_trust_domain(clients, admitted, refused) -> None:
    snap = linkerd(clients)
    for name, ns, td in admitted:
        assert decide(snap, caller(name, ns, td), "db", 5432).allowed, (name, ns, td)
    for name, ns, td in refused:
        assert not decide(snap, caller(name, ns, td), "db", 5432).allowed, (name, ns, td)


def test_a_server_selects_the_services_of_its_own_namespace_only() -> None:
    docs = parse_policy_documents(SERVER.replace("CLIENTS", "serviceAccounts: [{name: web}]"))
    mine = resolve_linkerd(docs.linkerd, TD, namespaces={"db": "team-a"})
    assert [p.scope for p in mine.policies] == ["db:5432"]
    elsewhere = resolve_linkerd(docs.linkerd, TD, namespaces={"db": "team-b"})
    assert elsewhere.policies == ()
    assert any("service 'db' is registered in namespace 'team-b', not 'team-a'" in n for n in elsewhere.notes)


NAMESPACE_DEFAULT = """
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  annotations: {config.linkerd.io/default-inbound-policy: cluster-authenticated, linkerd.io/inject: enabled}
"""


def test_a_namespace_default_covers_its_services_and_a_server_or_service_policy_is_more_specific() -> None:
    text = NAMESPACE_DEFAULT + "---\n" + SERVER.replace("CLIENTS", "serviceAccounts: [{name: web}]") + textwrap.dedent("""
        ---
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        metadata: {name: api}
        spec: {service: api, defaultPolicy: all-unauthenticated}
    """)
    docs = parse_policy_documents(text)
    (ns_obj,) = [o for o in docs.linkerd if o.kind == "Namespace"]
    assert any("linkerd.io/inject" in n for n in ns_obj.notes)
    spaces = {"db": "team-a", "api": "team-a", "cache": "team-a", "web": "team-b"}
    snap = snapshot_from_documents(docs, TD, namespaces=spaces)
    assert not decide(snap, Source(None, "10.0.0.1", plaintext=False), "cache", 6379).allowed  # the namespace default
    assert decide(snap, caller("web", "team-b"), "cache", 6379).allowed  # cluster-authenticated: any local identity
    assert decide(snap, Source(None, "10.0.0.1"), "api", 80).allowed  # its own whole-service policy wins
    assert not decide(snap, caller("web", "team-b"), "db", 5432).allowed  # the Server's port keeps the Server's
    assert decide(snap, caller("web", "team-b"), "web", 80).allowed  # another namespace: the mesh default


@pytest.mark.parametrize(("annotation", "says"), [
    ("{config.linkerd.io/default-inbound-policy: allow}", "unknown default policy 'allow'"),
    ("{config.linkerd.io/proxy-cpu-limit: '1'}", "Linkerd proxy configuration does not map"),
])
def test_namespace_annotations_that_do_not_map_are_refused(annotation, says) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_policy_documents(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: a, annotations: {annotation}}}\n")
    assert says in exc.value.message


# --- the catalog's rules (pure parts) ------------------------------------------------------------


def test_one_service_name_lives_in_one_namespace() -> None:
    assert namespace_conflict([{"Service": "web", "Namespace": "team-a"}], {"web": "team-a"}) is None
    assert namespace_conflict([{"Service": "web"}], {}) is None
    assert "registered in namespace 'default'" in namespace_conflict([{"Service": "web", "Namespace": "a"}], {"web": "default"})
    assert namespace_conflict([{"Service": "web", "Namespace": "a"}, {"Service": "web"}], {}) is not None


def test_ns_query_parameter() -> None:
    assert (parse_ns_param(None), parse_ns_param(""), parse_ns_param("*"), parse_ns_param("team-a")) == (
        "default", "default", "*", "team-a")
    with pytest.raises(InvalidInput, match="ns: namespace 'a/b'"):
        parse_ns_param("a/b")


# --- properties: never widened ---------------------------------------------------------------------

ns_st = st.sampled_from(NAMESPACES)
svc_st = st.sampled_from(SERVICES)


@st.composite
def intention_naming(draw, src_ns: str) -> Intention:
    """An intention whose source names namespace `src_ns` (any name, any destination)."""
    dst_wild = draw(st.sampled_from(["exact", "name", "all"]))
    dst_ns = "*" if dst_wild == "all" else draw(ns_st)
    dst = draw(svc_st) if dst_wild == "exact" else "*"
    src = "*" if src_ns == "*" else draw(st.sampled_from([*SERVICES, "*"]))
    return Intention(src, dst, draw(st.sampled_from(["allow", "deny"])), source_ns=src_ns, destination_ns=dst_ns)


@settings(max_examples=200, deadline=None)
@given(st.data(), ns_st, ns_st, svc_st, svc_st, ns_st, st.sampled_from(["allow", "deny"]))
def test_intentions_naming_another_source_namespace_change_nothing(data, named, ns, src, dst, dst_ns, default) -> None:
    if named == ns:
        return
    base = data.draw(st.lists(st.builds(Intention, st.sampled_from([*SERVICES, "*"]), st.sampled_from([*SERVICES, "*"]),
                                        st.sampled_from(["allow", "deny"]), source_ns=st.just(ns)), max_size=4))
    extra = data.draw(st.lists(intention_naming(named), min_size=1, max_size=6))
    spaces = {dst: dst_ns}
    before = decide(snap_of(base, default=default, namespaces=spaces), caller(src, ns), dst, 80)
    after = decide(snap_of([*base, *extra], default=default, namespaces=spaces), caller(src, ns), dst, 80)
    assert before.allowed == after.allowed and before.rule == after.rule


@settings(max_examples=200, deadline=None)
@given(st.data(), ns_st, ns_st, svc_st, svc_st, st.sampled_from(["allow", "deny"]))
def test_intentions_naming_another_destination_namespace_change_nothing(data, named, dst_ns, src, dst, default) -> None:
    if named == dst_ns:
        return
    extra = data.draw(st.lists(st.builds(
        Intention, st.sampled_from([*SERVICES, "*"]), st.sampled_from([*SERVICES, "*"]), st.sampled_from(["allow", "deny"]),
        destination_ns=st.just(named)), min_size=1, max_size=6))
    spaces = {dst: dst_ns}
    source = caller(src, data.draw(ns_st))
    before = decide(snap_of([], default=default, namespaces=spaces), source, dst, 80)
    after = decide(snap_of(extra, default=default, namespaces=spaces), source, dst, 80)
    assert before.allowed == after.allowed


LINKERD_CLIENTS = (
    "identities: [web.{ns}.serviceaccount.identity.linkerd.cluster.local]",
    "identities: ['*.{ns}.serviceaccount.identity.linkerd.cluster.local']",
    "serviceAccounts: [{{name: api, namespace: {ns}}}]",
    "serviceAccounts: [{{name: web, namespace: {ns}}}, {{name: db, namespace: {ns}}}]",
)


@settings(max_examples=100, deadline=None)
@given(ns_st, ns_st, svc_st, st.sampled_from(LINKERD_CLIENTS))
def test_a_linkerd_rule_naming_a_namespace_admits_no_caller_of_another(named, ns, name, clients) -> None:
    snap = linkerd(clients.format(ns=named))
    if named != ns:
        assert not decide(snap, caller(name, ns), "db", 5432).allowed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(intention_naming("team-a"), intention_naming("*")), max_size=8), ns_st, svc_st, svc_st, ns_st)
def test_fast_path_agrees_with_explain_across_namespaces(intentions, ns, src, dst, dst_ns) -> None:
    snap = snap_of(intentions, namespaces={dst: dst_ns})
    fast, slow = decide(snap, caller(src, ns), dst, 80), decide(snap, caller(src, ns), dst, 80, explain=True)
    assert (fast.allowed, fast.rule) == (slow.allowed, slow.rule)
