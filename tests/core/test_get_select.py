"""`tether get`'s selection (core/get_select.py): kubectl's kind spellings, names, namespaces."""

from __future__ import annotations

import pytest

from tether.core.errors import InvalidInput, NotFound
from tether.core.get_select import as_output, kind_matches, select

SERVER_A = {"apiVersion": "policy.linkerd.io/v1beta1", "kind": "Server", "metadata": {"name": "db", "namespace": "a"}}
SERVER_B = {"apiVersion": "policy.linkerd.io/v1beta1", "kind": "Server", "metadata": {"name": "db", "namespace": "b"}}
ISTIO = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "p", "namespace": "a"}}
LINKERD = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "AuthorizationPolicy", "metadata": {"name": "q", "namespace": "a"}}
MESH = {"apiVersion": "tether.dev/v1", "kind": "MeshPolicy", "metadata": {"name": "mesh"}}
DOCS = [SERVER_A, SERVER_B, ISTIO, LINKERD, MESH]


@pytest.mark.parametrize(("query", "doc", "expected"), [
    ("server", SERVER_A, True), ("Servers", SERVER_A, True), ("servers.policy.linkerd.io", SERVER_A, True),
    ("servers.security.istio.io", SERVER_A, False), ("serverauthorization", SERVER_A, False),
    ("authorizationpolicies", ISTIO, True), ("authorizationpolicies.security.istio.io", LINKERD, False),
    ("meshpolicies", MESH, True),
])
def test_kind_spellings(query, doc, expected) -> None:
    assert kind_matches(query, doc) is expected


def test_select_by_name_and_namespace() -> None:
    assert select(DOCS, "server") == [SERVER_A, SERVER_B]
    assert select(DOCS, "server", namespace="b") == [SERVER_B]
    assert select(DOCS, "server", "db", "a") == [SERVER_A]
    assert select(DOCS, "meshpolicy", namespace="a") == [MESH]  # mesh-wide: kept under any namespace
    assert select(DOCS, "networkauthentication") == []  # a kind Tether stores, none stored
    with pytest.raises(InvalidInput, match="is in namespaces a, b: give -n NAMESPACE"):
        select(DOCS, "server", "db")
    with pytest.raises(NotFound, match="no server named 'cache'"):
        select(DOCS, "server", "cache")
    with pytest.raises(InvalidInput, match="'gizmo' is not a kind Tether stores"):
        select(DOCS, "gizmo")


def test_output_is_one_document_or_a_list() -> None:
    assert as_output([SERVER_A], named=True) == SERVER_A
    assert as_output([SERVER_A], named=False) == {"apiVersion": "v1", "kind": "List", "items": [SERVER_A]}
