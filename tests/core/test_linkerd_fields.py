"""Every field of every accepted Linkerd kind is honoured, refused with its path, or named in
a warning (issue 11, "one rule for every accepted document"). The schema models are walked:
a field the table below does not classify fails the test, so a new field cannot slip in
unclassified. Each classification is proven by a change to one field of a base file:
honoured = the resolved server policies differ; refused = the parse fails naming the path;
warned = the object's notes name the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from tether.core.errors import InvalidInput
from tether.core import policy_linkerd as L
from tether.core.policy_schema import _Network
from tether.core.policy_yaml import all_server_policies, parse_policy_objects

TD = "0f0e0d0c-0000-4000-8000-000000000001.tether"
BASE = list(yaml.safe_load_all("""
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: s, namespace: default, labels: {tier: db}}
spec: {podSelector: {matchLabels: {app: db}}, port: 5432, accessPolicy: deny}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: a, namespace: default}
spec: {server: {name: s}, client: {meshTLS: {serviceAccounts: [{name: web}]}}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: s}
  requiredAuthenticationRefs:
    - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: m}
    - {group: policy.linkerd.io, kind: NetworkAuthentication, name: n}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: m, namespace: default}
spec: {identities: [ops.default.serviceaccount.identity.linkerd.cluster.local]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: n, namespace: default}
spec: {networks: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: default, annotations: {config.linkerd.io/default-inbound-policy: deny}}
spec: {}
"""))
SERVER, SA, AP, MESH, NET, NAMESPACE = range(6)
DROP = object()

#: (model, field) -> (document, path under spec, new value, outcome, what a refusal/warning says)
FIELDS = {
    (L._ServerSpec, "podSelector"): (SERVER, "podSelector.matchLabels", {"app": "cache"}, "honoured", ""),
    (L._Selector, "matchLabels"): (SERVER, "podSelector.matchLabels", {"app": "cache"}, "honoured", ""),
    (L._Selector, "matchExpressions"): (SERVER, "podSelector", {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "cache"]}]}, "honoured", ""),
    (L._ServerSpec, "externalWorkloadSelector"): (SERVER, "externalWorkloadSelector", {"matchLabels": {"app": "vm"}}, "refused", "spec.podSelector"),
    (L._ServerSpec, "port"): (SERVER, "port", 6432, "honoured", ""),
    (L._ServerSpec, "proxyProtocol"): (SERVER, "proxyProtocol", "HTTP/2", "warned", "spec.proxyProtocol 'HTTP/2' is carried as opaque TCP"),
    (L._ServerSpec, "accessPolicy"): (SERVER, "accessPolicy", "all-authenticated", "honoured", ""),
    (L._ServerAuthorizationSpec, "server"): (SA, "server.name", "other", "honoured", ""),
    (L._ServerRef, "name"): (SA, "server.name", "other", "honoured", ""),
    (L._ServerRef, "selector"): (SA, "server", {"selector": {"matchLabels": {"tier": "cache"}}}, "honoured", ""),
    (L._ServerAuthorizationSpec, "client"): (SA, "client", {"unauthenticated": True}, "honoured", ""),
    (L._Client, "meshTLS"): (SA, "client.meshTLS.serviceAccounts", [{"name": "api"}], "honoured", ""),
    (L._Client, "unauthenticated"): (SA, "client", {"unauthenticated": True}, "honoured", ""),
    (L._Client, "networks"): (SA, "client.networks", [{"cidr": "192.0.2.0/24"}], "honoured", ""),
    (L._MeshTLS, "identities"): (SA, "client.meshTLS", {"identities": ["*"]}, "honoured", ""),
    (L._MeshTLS, "serviceAccounts"): (SA, "client.meshTLS.serviceAccounts", [{"name": "api"}], "honoured", ""),
    (L._MeshTLS, "unauthenticatedTLS"): (SA, "client.meshTLS.unauthenticatedTLS", True, "refused", "spec.client.meshTLS.unauthenticatedTLS does not map"),
    (L._ServiceAccountRef, "name"): (SA, "client.meshTLS.serviceAccounts", [{"name": "api"}], "honoured", ""),
    (L._ServiceAccountRef, "namespace"): (SA, "client.meshTLS.serviceAccounts", [{"name": "web", "namespace": "other"}], "honoured", ""),
    (L._NamespaceSpec, "finalizers"): (NAMESPACE, "finalizers", ["kubernetes"], "warned", "spec.finalizers are Kubernetes' own"),
    (L._AuthorizationPolicySpec, "targetRef"): (AP, "targetRef.name", "other", "honoured", ""),
    (L._AuthorizationPolicySpec, "requiredAuthenticationRefs"): (AP, "requiredAuthenticationRefs", [{"kind": "ServiceAccount", "name": "api"}], "honoured", ""),
    (L._Ref, "group"): (AP, "targetRef.group", "gateway.networking.k8s.io", "refused", "spec.targetRef.group: 'gateway.networking.k8s.io' is not the group of Server"),
    (L._Ref, "kind"): (AP, "targetRef.kind", "HTTPRoute", "refused", "spec.targetRef: kind 'HTTPRoute' does not map"),
    (L._Ref, "name"): (AP, "targetRef.name", "other", "honoured", ""),
    (L._Ref, "namespace"): (AP, "targetRef.namespace", "other", "honoured", ""),
    (L._MeshTLSAuthenticationSpec, "identities"): (MESH, "identities", ["*"], "honoured", ""),
    (L._MeshTLSAuthenticationSpec, "identityRefs"): (MESH, "", {"identityRefs": [{"kind": "ServiceAccount", "name": "api"}]}, "honoured", ""),
    (L._NetworkAuthenticationSpec, "networks"): (NET, "networks", [{"cidr": "192.0.2.0/24"}], "honoured", ""),
    (_Network, "cidr"): (NET, "networks", [{"cidr": "10.0.0.0/9", "except": ["10.9.0.0/16"]}], "honoured", ""),
    (_Network, "except_"): (NET, "networks", [{"cidr": "10.0.0.0/8"}], "honoured", ""),
    (L._LinkerdDoc, "apiVersion"): (SERVER, None, "policy.linkerd.io/v1alpha1", "honoured", "the stored document keeps it"),
}
MODELS = [L._ServerSpec, L._Selector, L._ServerAuthorizationSpec, L._ServerRef, L._Client, L._MeshTLS, L._ServiceAccountRef,
          L._AuthorizationPolicySpec, L._Ref, L._MeshTLSAuthenticationSpec, L._NetworkAuthenticationSpec, _Network,
          L._NamespaceSpec]


def test_every_field_of_every_linkerd_model_is_classified():
    walked = {(m, f) for m in MODELS for f in m.model_fields}
    assert walked == {k for k in FIELDS if k[0] in MODELS}


def mutated(index: int, path: str | None, value: object) -> list[dict]:
    docs = copy.deepcopy(BASE)
    if path is None:
        docs[index]["apiVersion"] = value
        return docs
    node = docs[index]["spec"]
    *parents, last = path.split(".") if path else [""]
    for key in parents:
        node = node[key]
    if last:
        node[last] = value
    else:
        docs[index]["spec"] = value
    return docs


def resolved(docs: list[dict]) -> tuple:
    return all_server_policies(parse_policy_objects(docs), TD)


@pytest.mark.parametrize("field", list(FIELDS), ids=[f"{m.__name__}.{f}" for m, f in FIELDS])
def test_each_field_is_honoured_refused_or_warned(field):
    index, path, value, outcome, says = FIELDS[field]
    docs = mutated(index, path, value)
    if outcome == "refused":
        with pytest.raises(InvalidInput) as exc:
            resolved(docs)
        assert says in exc.value.message
    elif outcome == "warned":
        notes = [n for o in parse_policy_objects(docs).linkerd for n in o.notes]
        assert any(says in n for n in notes), notes
    elif path is None:  # the envelope: kept as applied
        assert parse_policy_objects(docs).linkerd[index].doc["apiVersion"] == value
    else:
        assert resolved(docs) != resolved(BASE), f"changing {path} changed nothing"
