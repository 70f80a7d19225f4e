"""Istio AuthorizationPolicy, its L4 subset (issue 11): what is honoured decides as Istio
would; everything else is refused with its path. Examples follow istio.io's
security/authorization tasks (allow-nothing, per-port ALLOW, ipBlocks)."""

from __future__ import annotations

import textwrap

import pytest

from tether.core.authz import Source, decide
from tether.core.errors import InvalidInput
from tether.core.policy_yaml import parse_policy_documents, snapshot_from_documents
from tether.core.spiffe import SpiffeId

TD = "0f0e0d0c-0000-4000-8000-000000000001.tether"
POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]
    to: [{operation: {ports: ["8000"]}}]
  - from: [{source: {ipBlocks: ["192.0.2.0/24"]}}]
  - from: [{source: {principals: ["cluster.local/ns/foo/sa/curl"]}}, {source: {namespaces: ["foo"], ipBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {ports: ["9000"]}}]
"""


def snap(text: str):
    return snapshot_from_documents(parse_policy_documents(textwrap.dedent(text), source="t.yaml"), TD)


def svc(name: str, td: str = TD) -> Source:
    return Source(SpiffeId(td, "foo", "dc1", name), "198.51.100.1")  # the policy's namespace (namespaces are kept)


def test_allow_rules_add_up_per_port_as_in_istio():
    s = snap(POLICY)
    assert decide(s, svc("sleep"), "httpbin", 8000).allowed
    assert not decide(s, svc("sleep"), "httpbin", 9000).allowed  # sleep's rule names port 8000 only
    assert not decide(s, svc("sleep"), "httpbin", 7000).allowed  # no rule for 7000: denied
    assert decide(s, svc("curl"), "httpbin", 9000).allowed
    assert decide(s, Source(SpiffeId(TD, "foo", "dc1", "any"), "10.1.2.3"), "httpbin", 9000).allowed  # ns foo from 10/8
    assert not decide(s, Source(SpiffeId(TD, "default", "dc1", "any"), "198.51.100.1"), "httpbin", 9000).allowed
    assert decide(s, Source(None, "192.0.2.7", plaintext=True), "httpbin", 7000).allowed  # ipBlocks: any port
    assert not decide(s, svc("sleep", "other.example"), "httpbin", 8000).allowed  # another trust domain


def test_allow_nothing():
    s = snap("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nothing}\n"
             "spec: {selector: {matchLabels: {app: db}}}\n")
    assert not decide(s, svc("web"), "db", 5432).allowed


@pytest.mark.parametrize(("spec", "says"), [
    ("{selector: {matchLabels: {app: db}}, action: DENY, rules: [{}]}", "spec.action: 'DENY' does not map"),
    ("{rules: [{}]}", "spec.selector: Tether maps a policy to the service named by one matchLabels entry"),
    ("{selector: {matchLabels: {app: db}}, rules: [{to: [{operation: {methods: [GET]}}]}]}",
     "spec.rules[0].to[0].operation.methods: an L7 (HTTP) match"),
    ("{selector: {matchLabels: {app: db}}, rules: [{when: [{key: \"request.auth.claims[iss]\", values: [x]}]}]}",
     "spec.rules[0].when: conditions on request attributes are L7"),
    ("{selector: {matchLabels: {app: db}}, rules: [{from: [{source: {namespaces: [other]}}]}]}",
     "spec.rules[0].from[0].source.namespaces[0]: 'other' is not the policy's namespace 'default'"),
    ("{selector: {matchLabels: {app: db}}, rules: [{from: [{source: {principals: [cluster.local/ns/x/sa/bot]}}]}]}",
     "is in namespace 'x', not the policy's 'default'"),
    ("{selector: {matchLabels: {app: db}}, rules: [{from: [{source: {notPrincipals: [a]}}]}]}",
     "spec.rules[0].from[0].source.notPrincipals: does not map"),
    ("{targetRef: {kind: Service, name: db}}", "spec.targetRef: targets Kubernetes Services"),
])
def test_what_does_not_map_is_refused_with_its_path(spec, says):
    with pytest.raises(InvalidInput) as exc:
        parse_policy_documents(f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p}}\nspec: {spec}\n")
    assert says in exc.value.message
