"""Policy documents as stored and served: format -> parse round trips, partial mesh updates,
and `snapshot_from_state` (what the agent, an out-of-process proxy and the CLI build from)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.authz import Source, build_snapshot, decide
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention, format_intention
from tether.core.policy import DefaultPolicy, MeshPolicy, ServerPolicy, make_authorization
from tether.core.policy_yaml import (
    format_mesh_policy, format_server_policy, merge_mesh_policy, parse_policy_objects, snapshot_from_state,
)
from tether.core.spiffe import SpiffeId

TD = "11111111-2222-3333-4444-555555555555.tether"
names = st.sampled_from(["web", "db", "api", "cache", "pay"])
identities = st.lists(st.sampled_from(["web", "*", "*.dc2." + TD, "spiffe://*/ns/default/dc/dc1/svc/api"]),
                      min_size=1, max_size=3, unique=True)
networks = st.lists(st.sampled_from([{"cidr": "192.0.2.0/24"}, {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]},
                                     {"cidr": "2001:db8::/32"}]), max_size=2, unique_by=lambda n: n["cidr"])


@st.composite
def server_policies(draw):
    auths = []
    for n in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            auths.append(make_authorization(f"a{n}", identities=draw(identities), networks=draw(networks)))
        else:
            auths.append(make_authorization(f"a{n}", unauthenticated=True, networks=draw(networks)))
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    return ServerPolicy(draw(names), port, draw(st.sampled_from(list(DefaultPolicy))), tuple(auths))


@settings(max_examples=60, deadline=None)
@given(server_policies())
def test_server_policy_documents_round_trip(policy):
    doc = format_server_policy(policy)
    assert parse_policy_objects([doc]).server_policies == (policy,)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(list(DefaultPolicy)), st.sampled_from(["allow", "deny"]), networks)
def test_mesh_documents_round_trip(default, action, cluster):
    from tether.core.cidr import parse_network_match

    mesh = MeshPolicy(default, action, tuple(parse_network_match(n["cidr"], n.get("except", ())) for n in cluster))
    parsed = parse_policy_objects([format_mesh_policy(mesh)])
    assert parsed.mesh == mesh
    assert parsed.mesh_fields == {"defaultPolicy", "defaultIntention", "clusterNetworks", "probeNetworks"}


def test_a_partial_mesh_document_changes_only_what_it_sets():
    current = MeshPolicy(DefaultPolicy.AUDIT, "deny")
    docs = parse_policy_objects([{"apiVersion": "tether.dev/v1", "kind": "MeshPolicy",
                                  "spec": {"clusterNetworks": [{"cidr": "10.0.0.0/8"}]}}])
    assert docs.mesh_fields == {"clusterNetworks"}
    merged = merge_mesh_policy(current, docs.mesh, docs.mesh_fields)
    assert (merged.default_policy, merged.default_intention) == (DefaultPolicy.AUDIT, "deny")
    assert [str(n) for n in merged.cluster_networks] == ["10.0.0.0/8"]


def _state(intentions, policies=(), mesh=MeshPolicy(), index=7):
    return {"Index": index, "TrustDomain": TD, "Intentions": [format_intention(i) for i in intentions],
            "Policies": [format_server_policy(p) for p in policies], "Mesh": format_mesh_policy(mesh)}


def test_snapshot_from_state_decides_as_build_snapshot_does():
    intentions = [Intention("web", "db", "allow", id="8f246b77-f3e1-ff88-5b48-8ec93abf3e05", create_index=3,
                            modify_index=4), Intention("*", "db", "deny", id="e9ebc19f-d481-42b1-4871-4d298d3acd5c")]
    policies = [ServerPolicy("db", 5432, DefaultPolicy.ALL_AUTHENTICATED)]
    mesh = MeshPolicy(DefaultPolicy.ALL_UNAUTHENTICATED, "deny")
    snap = snapshot_from_state(_state(intentions, policies, mesh), TD)
    direct = build_snapshot(intentions, policies, "deny", "all-unauthenticated", TD)
    assert snap.index == 7 and snap.intentions == direct.intentions
    for who in ("web", "api"):
        source = Source(SpiffeId(TD, "default", "dc1", who), "10.0.0.1")
        for port in (5432, 80, None):
            assert decide(snap, source, "db", port) == decide(direct, source, "db", port)
    assert not decide(snap, Source(None, "192.0.2.1"), "db", 5432).allowed


def test_snapshot_from_state_reuses_known_intentions_and_reports_every_problem():
    web = Intention("web", "db", "allow", id="8f246b77-f3e1-ff88-5b48-8ec93abf3e05", modify_index=4)
    first = snapshot_from_state(_state([web]), TD)
    again = snapshot_from_state(_state([web]), TD, known={(i.id, i.modify_index): i for i in first.intentions})
    assert again.intentions[0] is first.intentions[0]
    bad = _state([web])
    bad["Intentions"].append({"SourceName": "we b", "DestinationName": "db", "Action": "allow"})
    bad["Policies"].append({"apiVersion": "tether.dev/v1", "kind": "ServerPolicy", "spec": {"service": "x", "colour": 1}})
    with pytest.raises(InvalidInput) as exc:
        snapshot_from_state(bad, TD)
    assert "'we b'" in exc.value.message and "spec.colour: unknown field" in exc.value.message


def test_unknown_enum_values_are_named():
    with pytest.raises(InvalidInput) as exc:
        parse_policy_objects([{"apiVersion": "tether.dev/v1", "kind": "MeshPolicy", "spec": {"defaultIntention": "maybe"}}])
    assert "unknown value 'maybe'; use 'allow' or 'deny'" in exc.value.message
