"""Policy YAML: Tether kinds, Linkerd kinds, strictness, all-or-nothing error collection.

Linkerd examples follow linkerd/website linkerd.io/content/2-edge/reference/authorization-policy.md.
"""

from __future__ import annotations

import textwrap

import pytest

from tether.core.authz import Source, decide
from tether.core.errors import InvalidInput
from tether.core.intentions import Intention
from tether.core.policy import DefaultPolicy, MeshPolicy, PatternKind
from tether.core.policy_yaml import PolicyDocuments, all_server_policies, parse_policy_documents, snapshot_from_documents
from tether.core.spiffe import SpiffeId

TD = "0f0e0d0c-0000-4000-8000-000000000001.tether"

TETHER = """
apiVersion: tether.dev/v1
kind: MeshPolicy
metadata: {name: mesh}
spec:
  defaultPolicy: all-authenticated
  defaultIntention: deny
  clusterNetworks: [{cidr: 10.0.0.0/8}]
---
apiVersion: tether.dev/v1
kind: ServerPolicy
metadata: {name: db-postgres}
spec:
  service: db
  port: 5432
  authorizations:
    - name: app-tier
      identities: [web, "spiffe://*/ns/default/dc/dc2/svc/api", "*.dc3.%(td)s"]
    - name: load-balancer
      unauthenticated: true
      networks:
        - cidr: 192.0.2.0/24
          except: [192.0.2.128/25]
---
apiVersion: tether.dev/v1
kind: ServiceIntentions
spec:
  destination: db
  sources:
    - {name: web, action: allow, description: the app, meta: {owner: team-a}}
    - {name: "*", action: deny}
---
""" % {"td": TD}


def parse(text: str) -> PolicyDocuments:
    return parse_policy_documents(textwrap.dedent(text), source="test.yaml")


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(InvalidInput) as exc:
        parse(text)
    assert exc.value.message.startswith(f"test.yaml: {len(exc.value.errors)} problem(s)")  # type: ignore[attr-defined]
    return exc.value.errors  # type: ignore[attr-defined]


def test_tether_kinds() -> None:
    docs = parse(TETHER)
    assert docs.mesh is not None and docs.mesh.default_policy is DefaultPolicy.ALL_AUTHENTICATED
    assert docs.mesh.default_intention == "deny" and str(docs.mesh.cluster_networks[0]) == "10.0.0.0/8"
    (pol,) = docs.server_policies
    assert (pol.name, pol.service, pol.port, pol.default_policy) == ("db-postgres", "db", 5432, DefaultPolicy.DENY)
    app, lb = pol.authorizations
    assert [p.kind for p in app.identities] == [PatternKind.SERVICE, PatternKind.SPIFFE, PatternKind.SUFFIX]
    assert lb.unauthenticated and str(lb.networks[0]) == "192.0.2.0/24 except 192.0.2.128/25"
    assert docs.intentions == (Intention("web", "db", "allow", "the app", {"owner": "team-a"}), Intention("*", "db", "deny"))


def test_documents_drive_decide() -> None:
    snap = snapshot_from_documents(parse(TETHER), TD)

    def caller(svc: str, dc: str = "dc1") -> Source:
        return Source(SpiffeId(TD, "default", dc, svc), "10.0.0.1")

    assert decide(snap, caller("web"), "db", 5432).rule.name == "app-tier"  # type: ignore[union-attr]
    assert decide(snap, caller("x", "dc3"), "db", 5432).allowed
    assert not decide(snap, caller("cache"), "db", 5432).allowed  # server policy db-postgres: deny
    assert decide(snap, Source(None, "192.0.2.7"), "db", 5432).allowed
    assert not decide(snap, Source(None, "192.0.2.200"), "db", 5432).allowed
    assert decide(snap, caller("web"), "db", 80).allowed  # mesh all-authenticated, then web -> db allow
    assert not decide(snap, caller("api"), "db", 80).allowed  # * -> db deny


def test_defaults_when_fields_are_omitted() -> None:
    docs = parse("""
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        spec: {service: cache}
        ---
        apiVersion: tether.dev/v1
        kind: MeshPolicy
        spec: {}
    """)
    assert docs.server_policies[0].default_policy is DefaultPolicy.DENY  # Linkerd: a Server denies by default
    assert docs.server_policies[0].name == "cache" and docs.server_policies[0].port is None
    assert docs.mesh == MeshPolicy()
    assert parse("") == PolicyDocuments() and parse("---\n---\n") == PolicyDocuments()


def test_unknown_fields_are_named_with_a_suggestion() -> None:
    errs = problems("""
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        metadata: {name: x, labelz: {}}
        spec:
          service: db
          authorizations:
            - name: a
              identites: [web]
    """)
    assert "test.yaml: document 1 (ServerPolicy x): metadata.labelz: unknown field (did you mean 'labels'?)" in errs
    assert any("spec.authorizations[0].identites: unknown field (did you mean 'identities'?)" in e for e in errs)


def test_every_problem_in_every_document_is_reported_and_nothing_is_returned() -> None:
    errs = problems("""
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        spec:
          service: db
          port: 70000
          defaultPolicy: denny
        ---
        apiVersion: tether.dev/v1
        kind: ServiceIntentions
        spec:
          destination: db
          sources: [{name: "we*b", action: allow}, {name: api, action: maybe}]
        ---
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        spec:
          service: web
          authorizations:
            - {name: bad, identities: ["spiffe://td/ns/x"], networks: [{cidr: 10.0.0.1/8}]}
        ---
        apiVersion: tether.dev/v1
        kind: MeshPolicy
        spec: {clusterNetworks: [{cidr: 10.0.0.0/8, except: [192.0.2.0/24]}]}
    """)
    joined = "\n".join(errs)
    for needle in ("document 1", "spec.port", "spec.defaultPolicy", "'deny'",
                   "document 2", "'we*b'", "spec.sources[1].action",
                   "document 3", "spiffe://td/ns/x", "did you mean 10.0.0.0/8",
                   "document 4", "192.0.2.0/24 is not inside 10.0.0.0/8"):
        assert needle in joined
    assert len(errs) == 7


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kind: ServerPolicy\napiVersion: tether.dev/v9\nspec: {}", "apiVersion 'tether.dev/v9' is not supported"),
        ("apiVersion: tether.dev/v1\nkind: Firewall\nspec: {}", "kind 'Firewall' is not a Tether kind"),
        ("- just\n- a list", "expected a mapping with apiVersion, kind and spec, got list"),
        ("apiVersion: tether.dev/v1\nkind: MeshPolicy\nspec: {defaultPolicy: [unclosed", "YAML does not parse at line 3"),
        ("!!python/object:os.system {}", "YAML does not parse"),  # safe_load only
        ("apiVersion: tether.dev/v1\nkind: ServerPolicy\nspec: {service: db, port: '80'}", "spec.port"),  # strict types
        ("apiVersion: tether.dev/v1\nkind: ServerPolicy\nspec: {}", "spec.service: required field is missing"),
    ],
)
def test_refusals(text: str, needle: str) -> None:
    assert needle in "\n".join(problems(text))


def test_duplicates_are_refused() -> None:
    errs = "\n".join(problems("""
        apiVersion: tether.dev/v1
        kind: ServiceIntentions
        spec: {destination: db, sources: [{name: web, action: allow}, {name: web, action: deny}]}
        ---
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        spec: {service: db, port: 1}
        ---
        apiVersion: tether.dev/v1
        kind: ServerPolicy
        metadata: {name: again}
        spec: {service: db, port: 1}
        ---
        apiVersion: tether.dev/v1
        kind: MeshPolicy
        ---
        apiVersion: tether.dev/v1
        kind: MeshPolicy
    """))
    assert "intention web -> db is declared twice" in errs
    assert "document 3 (ServerPolicy again): db:1 already has a server policy" in errs
    assert "document 5 (MeshPolicy): only one MeshPolicy may be given" in errs


# --- Linkerd kinds --------------------------------------------------------------------------------

BOOKSAPP = """
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: authors-policy, namespace: booksapp}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: authors}
  requiredAuthenticationRefs:
    - {name: authors-get-authn, kind: MeshTLSAuthentication, group: policy.linkerd.io}
    - {name: cluster-network, kind: NetworkAuthentication, group: policy.linkerd.io}
---
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: authors, namespace: booksapp, uid: 1234, resourceVersion: "9"}
spec:
  podSelector: {matchLabels: {app: authors}}
  port: 7001
  proxyProtocol: HTTP/1
status: {conditions: []}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: authors-get-authn, namespace: booksapp}
spec:
  identities:
    - "books.booksapp.serviceaccount.identity.linkerd.cluster.local"
    - "webapp.booksapp.serviceaccount.identity.linkerd.cluster.local"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: cluster-network, namespace: booksapp}
spec:
  networks: [{cidr: 10.0.0.0/8}, {cidr: 100.64.0.0/10}]
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: kubelet, namespace: booksapp}
spec:
  server: {name: authors}
  client:
    unauthenticated: true
    networks: [{cidr: 192.0.2.0/24}]
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: any-meshed, namespace: booksapp}
spec:
  server: {name: authors}
  client:
    meshTLS: {serviceAccounts: [{name: admin}]}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: booksapp}
spec:
  targetRef: {kind: Namespace, name: booksapp}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: ops}]
"""


def test_linkerd_booksapp_maps_onto_server_policy() -> None:
    (pol,) = all_server_policies(parse(BOOKSAPP), TD)
    # [L-ref] "a Server ... all traffic to the port on its pods will be denied unless explicitly authorized"
    assert (pol.name, pol.service, pol.port, pol.default_policy) == ("authors", "authors", 7001, DefaultPolicy.DENY)
    by_name = {a.name: a for a in pol.authorizations}
    policy = by_name["authors-policy"]  # both refs must match: identities AND networks
    assert [p.text for p in policy.identities] == [f"spiffe://{TD}/ns/booksapp/dc/*/svc/books",
                                                   f"spiffe://{TD}/ns/booksapp/dc/*/svc/webapp"]
    assert [str(n) for n in policy.networks] == ["10.0.0.0/8", "100.64.0.0/10"]
    assert by_name["kubelet"].unauthenticated and str(by_name["kubelet"].networks[0]) == "192.0.2.0/24"
    assert [p.text for p in by_name["any-meshed"].identities] == [f"spiffe://{TD}/ns/booksapp/dc/*/svc/admin"]
    assert [p.text for p in by_name["ns-wide"].identities] == [f"spiffe://{TD}/ns/booksapp/dc/*/svc/ops"]


def test_linkerd_policy_decides() -> None:
    snap = snapshot_from_documents(parse(BOOKSAPP), TD)
    books = SpiffeId(TD, "booksapp", "dc1", "books")
    assert decide(snap, Source(books, "10.3.0.1"), "authors", 7001).allowed
    assert not decide(snap, Source(books, "198.51.100.1"), "authors", 7001).allowed  # identity without network
    assert decide(snap, Source(None, "192.0.2.9"), "authors", 7001).allowed  # the kubelet range
    assert not decide(snap, Source(SpiffeId(TD, "booksapp", "dc1", "stranger"), "10.3.0.1"), "authors", 7001).allowed
    # the same service account name in another namespace is another caller
    assert not decide(snap, Source(SpiffeId(TD, "default", "dc1", "books"), "10.3.0.1"), "authors", 7001).allowed


def test_linkerd_identity_star_means_any_meshed_client() -> None:
    docs = parse("""
        apiVersion: policy.linkerd.io/v1beta1
        kind: Server
        metadata: {name: s}
        spec: {podSelector: {matchLabels: {app.kubernetes.io/name: db}}, port: 5432, accessPolicy: audit}
        ---
        apiVersion: policy.linkerd.io/v1alpha1
        kind: MeshTLSAuthentication
        metadata: {name: all}
        spec: {identities: ["*"]}
        ---
        apiVersion: policy.linkerd.io/v1alpha1
        kind: AuthorizationPolicy
        metadata: {name: p}
        spec:
          targetRef: {kind: Server, name: s}
          requiredAuthenticationRefs: [{kind: MeshTLSAuthentication, name: all}]
    """)
    (pol,) = all_server_policies(docs, TD)
    assert pol.service == "db" and pol.default_policy is DefaultPolicy.AUDIT
    assert pol.authorizations[0].identities[0].kind is PatternKind.ANY


LINKERD_SERVER = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: s}
spec: {podSelector: {matchLabels: {app: db}}, port: 5432}
---
"""


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("apiVersion: policy.linkerd.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}", "HTTPRoute is L7 routing"),
        ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}", "HTTPRoute is L7 routing"),
        ("apiVersion: policy.linkerd.io/v1beta1\nkind: Egress\nmetadata: {name: r}\nspec: {}", "Linkerd kind 'Egress' does not map"),
        ("apiVersion: policy.linkerd.io/v1beta1\nkind: Server\nmetadata: {name: s}\nspec: {podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [a]}]}, port: 1}",
         "spec.podSelector: Tether maps a Server to services by the workload label"),
        ("apiVersion: policy.linkerd.io/v1beta1\nkind: Server\nmetadata: {name: s}\nspec: {podSelector: {matchLabels: {app: db, tier: x}}, port: 1}",
         "other selectors do not map"),
        ("apiVersion: policy.linkerd.io/v1beta1\nkind: Server\nmetadata: {name: s}\nspec: {podSelector: {matchLabels: {app: db}}, port: HTTP_1}",
         "spec.port: 'HTTP_1' is neither a port number nor a port name"),
        ("apiVersion: policy.linkerd.io/v1beta1\nkind: Server\nmetadata: {name: s}\nspec: {podSelector: {matchLabels: {app: db}}, port: 1, proxyProtocl: TLS}",
         "spec.proxyProtocl: unknown field (did you mean 'proxyProtocol'?)"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\nmetadata: {name: a}\nspec: {server: {name: s}, client: {meshTLS: {unauthenticatedTLS: true}}}",
         "unauthenticatedTLS does not map"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\nmetadata: {name: a}\nspec: {server: {selector: {matchExpressions: [{key: x, operator: Exists}]}}, client: {unauthenticated: true}}",
         "spec.server.selector: only matchLabels"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\nmetadata: {name: a}\nspec: {server: {name: s}, client: {meshTLS: {identities: ['*.n_s.serviceaccount.identity.linkerd.cluster.local']}}}",
         "namespace 'n_s' must be one DNS label"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\nmetadata: {name: a}\nspec: {server: {name: s}, client: {meshTLS: {identities: ['web.example.com']}}}",
         "'web.example.com' is not a Linkerd identity"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetRef: {kind: HTTPRoute, name: r}, requiredAuthenticationRefs: [{kind: ServiceAccount, name: x}]}",
         "kind 'HTTPRoute' does not map (L7 routes are not supported)"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetRef: {kind: Server, name: s}, requiredAuthenticationRefs: [{kind: ServiceAccount, name: x}, {kind: ServiceAccount, name: y}]}",
         "at most one identity"),
        (LINKERD_SERVER + "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetRef: {kind: Server, name: s}}",
         "list at least one authentication"),
    ],
)
def test_linkerd_refusals_say_why(text: str, needle: str) -> None:
    assert needle in "\n".join(problems(text))


def test_linkerd_namespace_wildcard_means_every_service_of_that_namespace_only() -> None:
    docs = parse("""
        apiVersion: policy.linkerd.io/v1beta1
        kind: Server
        metadata: {name: emoji-grpc, namespace: emojivoto}
        spec: {podSelector: {matchLabels: {app: emoji-svc}}, port: 8080}
        ---
        apiVersion: policy.linkerd.io/v1alpha1
        kind: MeshTLSAuthentication
        metadata: {name: emojivoto-accounts, namespace: emojivoto}
        spec: {identities: ["*.emojivoto.serviceaccount.identity.linkerd.cluster.local"]}
        ---
        apiVersion: policy.linkerd.io/v1alpha1
        kind: AuthorizationPolicy
        metadata: {name: emojivoto-only, namespace: emojivoto}
        spec:
          targetRef: {kind: Namespace, name: emojivoto}
          requiredAuthenticationRefs: [{kind: MeshTLSAuthentication, name: emojivoto-accounts}]
    """)
    snap = snapshot_from_documents(docs, TD)
    assert decide(snap, Source(SpiffeId(TD, "emojivoto", "dc1", "web")), "emoji-svc", 8080).allowed
    assert not decide(snap, Source(SpiffeId(TD, "default", "dc1", "web")), "emoji-svc", 8080).allowed
    assert not decide(snap, Source(SpiffeId("other.example", "emojivoto", "dc1", "web")), "emoji-svc", 8080).allowed
    assert not decide(snap, Source(None, "127.0.0.1"), "emoji-svc", 8080).allowed


def test_kubectl_output_applies_as_is_lists_and_managed_fields() -> None:
    """`kubectl get servers,serverauthorizations -o yaml` prints a List with status and managed metadata."""
    docs = parse("""
        apiVersion: v1
        kind: List
        items:
        - apiVersion: policy.linkerd.io/v1beta1
          kind: Server
          metadata:
            name: s
            namespace: default
            uid: 0b4c
            resourceVersion: "81"
            generation: 2
            creationTimestamp: "2024-01-01T00:00:00Z"
            managedFields: [{manager: kubectl-client-side-apply, operation: Update}]
            annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
          spec: {podSelector: {matchLabels: {app: db}}, port: 5432}
          status: {observedGeneration: 2}
        - apiVersion: tether.dev/v1
          kind: ServerPolicy
          metadata: {name: cache, uid: 11}
          spec: {service: cache}
          status: {}
        metadata: {resourceVersion: ""}
    """)
    assert [o.key for o in docs.linkerd] == ["Server/default/s"] and "uid" not in docs.linkerd[0].doc["metadata"]
    assert [p.service for p in docs.server_policies] == ["cache"]


def test_every_problem_of_a_list_names_its_item_kind_name_and_path() -> None:
    errs = problems("""
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: tether.dev/v1, kind: ServerPolicy, metadata: {name: a}, spec: {service: db, prot: 1}}
        - {apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {name: b}, spec: {}}
    """)
    assert errs[0].startswith("test.yaml: document 1.1 (ServerPolicy a): spec.prot: unknown field (did you mean 'port'?)")
    assert errs[1].startswith("test.yaml: document 1.2 (AuthorizationPolicy b): spec.selector: Tether maps a policy "
                              "to the service named by one matchLabels entry")
