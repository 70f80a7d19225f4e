"""Linkerd policy objects over the real HTTP API: stored one by one, applied in any order,
joined when a decision is made (issue 11). Decisions come from the state agents fetch,
built and decided with the code the proxy and `tether policy explain` run."""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import httpx
import pytest

from tether.core.authz import Source, decide
from tether.core.policy_yaml import snapshot_from_state
from tether.core.spiffe import SpiffeId
from tether.testing.agent import open_in_process

SERVER = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto, uid: 5e0c, resourceVersion: "7", managedFields: [{manager: kubectl}]}
spec: {podSelector: {matchLabels: {app: voting-svc}}, port: 8080, proxyProtocol: gRPC}
status: {conditions: []}
"""
WEB_POLICY = """
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-allow-web, namespace: emojivoto}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: voting-grpc}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: web, namespace: emojivoto}]
"""
OPS_POLICY = """
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-allow-ops, namespace: emojivoto}
spec:
  targetRef: {kind: Server, name: voting-grpc}
  requiredAuthenticationRefs: [{kind: MeshTLSAuthentication, name: ops-accounts}]
"""
OPS_AUTHN = """
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: ops-accounts, namespace: emojivoto}
spec: {identities: [ops.emojivoto.serviceaccount.identity.linkerd.cluster.local]}
"""


async def apply(api, text: str):
    return await api.put("/v1/tether/policy", params={"file": "t.yaml"}, content=textwrap.dedent(text).encode())


async def allowed(api, caller: str | None, service: str, port: int, ip: str = "127.0.0.1", ns: str = "emojivoto") -> bool:
    """Whether `caller` of namespace `ns` (the documents' own by default) may connect."""
    state = (await api.get("/v1/internal/tether/authz")).json()
    snap = snapshot_from_state(state, state["TrustDomain"])
    ident = SpiffeId(snap.trust_domain, ns, "dc1", caller) if caller else None
    return decide(snap, Source(ident, ip), service, port).allowed


@pytest.mark.parametrize("order", list(itertools.permutations([SERVER, WEB_POLICY, OPS_POLICY, OPS_AUTHN]))[::5])
async def test_objects_apply_in_any_order_and_authorizations_add_up(api, order):
    for text in order:
        r = await apply(api, text)
        assert r.status_code == 200, r.text
    assert await allowed(api, "web", "voting-svc", 8080)
    assert await allowed(api, "ops", "voting-svc", 8080)  # a second policy for the Server adds, never replaces
    assert not await allowed(api, "vote-bot", "voting-svc", 8080)


async def test_a_server_applied_again_keeps_what_targets_it(api):
    for text in (SERVER, WEB_POLICY, OPS_AUTHN, OPS_POLICY):
        assert (await apply(api, text)).status_code == 200
    assert (await apply(api, SERVER)).status_code == 200
    assert await allowed(api, "web", "voting-svc", 8080) and await allowed(api, "ops", "voting-svc", 8080)


async def test_an_authentication_alone_is_stored_and_listed(api):
    r = await apply(api, OPS_AUTHN)
    assert r.status_code == 200 and r.json()["Linkerd"] == ["MeshTLSAuthentication emojivoto/ops-accounts"]
    stored = [d for d in (await api.get("/v1/tether/policy")).json() if d["kind"] == "MeshTLSAuthentication"]
    assert stored == [{"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "MeshTLSAuthentication",
                       "metadata": {"name": "ops-accounts", "namespace": "emojivoto"},
                       "spec": {"identities": ["ops.emojivoto.serviceaccount.identity.linkerd.cluster.local"]}}]
    # what GET returns is re-appliable as it is
    r = await api.put("/v1/tether/policy", json=stored)
    assert r.status_code == 200, r.text


async def test_a_policy_whose_authentication_is_missing_denies_and_says_so(api):
    assert (await apply(api, SERVER)).status_code == 200
    r = await apply(api, OPS_POLICY)
    assert r.status_code == 200
    assert any("MeshTLSAuthentication 'ops-accounts'" in w and "authorizes nobody" in w for w in r.json()["Warnings"])
    assert not await allowed(api, "ops", "voting-svc", 8080)
    assert (await apply(api, OPS_AUTHN)).status_code == 200
    assert await allowed(api, "ops", "voting-svc", 8080)


async def test_an_authorization_before_its_server_warns_and_then_takes_effect(api):
    r = await apply(api, WEB_POLICY)
    assert r.status_code == 200
    assert any("Server 'voting-grpc'" in w and "no effect until" in w for w in r.json()["Warnings"])
    assert await allowed(api, "web", "voting-svc", 8080)  # no Server yet: the mesh default (allow) decides
    assert (await apply(api, SERVER)).status_code == 200
    assert await allowed(api, "web", "voting-svc", 8080) and not await allowed(api, "vote-bot", "voting-svc", 8080)


async def test_a_server_for_an_unregistered_service_warns(api):
    r = await apply(api, SERVER)
    assert "service 'voting-svc' (from spec.podSelector) is not registered" in "\n".join(r.json()["Warnings"])


OTHER_NS_BOT = """
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: bot, namespace: emojivoto}
spec:
  server: {name: voting-grpc}
  client: {meshTLS: {serviceAccounts: [{name: vote-bot, namespace: other-ns}]}}
"""
OTHER_NS_IDENTITY = """
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: ops-accounts, namespace: emojivoto}
spec: {identities: [vote-bot.other-ns.serviceaccount.identity.linkerd.cluster.local]}
"""


@pytest.mark.parametrize("text", [OTHER_NS_BOT, OPS_POLICY + "---\n" + OTHER_NS_IDENTITY])
async def test_a_caller_of_another_namespace_is_kept_in_it_never_widened(api, text):
    assert (await apply(api, SERVER)).status_code == 200
    r = await apply(api, text)
    assert r.status_code == 200, r.text
    assert await allowed(api, "vote-bot", "voting-svc", 8080, ns="other-ns")
    assert not await allowed(api, "vote-bot", "voting-svc", 8080)  # emojivoto's own vote-bot is another caller
    assert not await allowed(api, "vote-bot", "voting-svc", 8080, ns="default")


@pytest.mark.parametrize(("text", "needle"), [
    (SERVER.replace("voting-grpc", "voting-again"), "covers voting-svc:8080, which Server emojivoto/voting-grpc covers already"),
])
async def test_what_would_overlap_is_refused_with_its_path(api, text, needle):
    assert (await apply(api, SERVER)).status_code == 200
    before = (await api.get("/v1/tether/policy")).json()
    r = await apply(api, text)
    assert r.status_code == 400 and needle in r.text, r.text
    assert (await api.get("/v1/tether/policy")).json() == before


async def test_a_foreign_trust_domain_stays_foreign(api):
    assert (await apply(api, SERVER)).status_code == 200
    r = await apply(api, """
        apiVersion: policy.linkerd.io/v1beta1
        kind: ServerAuthorization
        metadata: {name: east, namespace: emojivoto}
        spec:
          server: {name: voting-grpc}
          client: {meshTLS: {identities: [slow-cooker.mc-demo.serviceaccount.identity.linkerd.east.example.org]}}
    """)
    assert r.status_code == 200, r.text
    assert not await allowed(api, "slow-cooker", "voting-svc", 8080)  # a local slow-cooker is not the east one
    state = (await api.get("/v1/internal/tether/authz")).json()
    snap = snapshot_from_state(state, state["TrustDomain"])
    east = SpiffeId("east.example.org", "mc-demo", "dc9", "slow-cooker")
    assert decide(snap, Source(east, "127.0.0.1"), "voting-svc", 8080).allowed
    assert not decide(snap, Source(SpiffeId("east.example.org", "other", "dc9", "slow-cooker"), "127.0.0.1"),
                      "voting-svc", 8080).allowed


NAMED = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec: {podSelector: {matchLabels: {app: voting-svc}}, port: grpc, proxyProtocol: gRPC}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: voting-grpc, namespace: emojivoto}
spec:
  server: {name: voting-grpc}
  client: {meshTLS: {serviceAccounts: [{name: web}]}}
"""


async def register(api, name: str, port: int, meta: dict, namespace: str = "emojivoto") -> None:
    r = await api.put("/v1/agent/service/register", json={"Name": name, "Port": port, "Meta": meta,
                                                           "Namespace": namespace})
    assert r.status_code == 200, r.text


async def test_a_named_port_resolves_against_the_registrations_meta(api):
    r = await apply(api, NAMED)
    assert r.status_code == 200
    assert any("spec.port 'grpc': no instance of service 'voting-svc' names that port "
               "(registration Meta tether-port-grpc)" in w for w in r.json()["Warnings"])
    assert await allowed(api, "vote-bot", "voting-svc", 8080)  # no number yet: the Server has no effect
    await register(api, "voting-svc", 8080, {"tether-port-grpc": "8080"})
    assert await allowed(api, "web", "voting-svc", 8080)
    assert not await allowed(api, "vote-bot", "voting-svc", 8080)
    assert await allowed(api, "vote-bot", "voting-svc", 9090)  # another port: not this Server's


async def test_a_named_port_meta_that_is_not_a_number_is_refused_at_registration(api):
    r = await api.put("/v1/agent/service/register", json={"Name": "x", "Port": 1, "Meta": {"tether-port-grpc": "grpc"}})
    assert r.status_code == 400 and "Meta 'tether-port-grpc': 'grpc' must be a port number" in r.text


EMOJIVOTO = Path(__file__).resolve().parents[1] / "corpus" / "linkerd" / "emojivoto-policy.yml"
REGISTRATIONS = [("emoji-svc", 8080, {"tether-port-grpc": "8080"}), ("voting-svc", 8081, {"tether-port-grpc": "8081"}),
                 ("web-svc", 8082, {"tether-port-http": "8082"})]


async def resolved_after(documents: list[str]) -> list[dict]:
    """The server policies an agent serves after these documents were applied one at a time."""
    async with open_in_process("dev", node="order") as running, \
            httpx.AsyncClient(base_url=running.url, timeout=30) as api:
        for name, port, meta in REGISTRATIONS:
            await register(api, name, port, meta)
        for text in documents:
            r = await api.put("/v1/tether/policy", content=text.encode())
            assert r.status_code == 200, r.text
        state = (await api.get("/v1/internal/tether/authz")).json()
        # identities name this agent's trust domain (each run has its own): compare without it
        policies = json.loads(json.dumps(state["Policies"]).replace(state["TrustDomain"], "<td>"))
        return sorted(policies, key=lambda d: (d["spec"]["service"], d["spec"]["port"]))


async def test_the_emojivoto_file_one_document_at_a_time_in_any_order_means_the_same():
    text = EMOJIVOTO.read_text()
    documents = [d for d in text.split("\n---\n") if "kind:" in d]
    whole = await resolved_after([text])
    assert [(d["metadata"]["name"], d["spec"]["service"]) for d in whole] == [
        ("emoji-grpc", "emoji-svc"), ("voting-grpc", "voting-svc"), ("web-http", "web-svc")]
    assert await resolved_after(documents[::-1]) == whole
    assert await resolved_after(documents[1::2] + documents[0::2]) == whole


async def test_policy_get_for_a_service_shows_the_linkerd_objects_that_make_its_policy(api):
    for text in (SERVER, WEB_POLICY, OPS_POLICY, OPS_AUTHN):
        assert (await apply(api, text)).status_code == 200
    docs = (await api.get("/v1/tether/policy/voting-svc")).json()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("AuthorizationPolicy", "voting-allow-ops"), ("AuthorizationPolicy", "voting-allow-web"),
        ("MeshTLSAuthentication", "ops-accounts"), ("Server", "voting-grpc")]
    assert (await api.get("/v1/tether/policy/emoji-svc")).json() == []


ISTIO_ALLOW = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: voting-allow-web, namespace: emojivoto}
spec:
  selector: {matchLabels: {app: voting-svc}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/emojivoto/sa/web]}}]
    to: [{operation: {ports: ["8080"]}}]
"""


async def test_an_istio_allow_policy_is_stored_decides_and_is_deleted(api):
    r = await apply(api, ISTIO_ALLOW)
    assert r.status_code == 200 and r.json()["Istio"] == ["AuthorizationPolicy emojivoto/voting-allow-web"], r.text
    assert await allowed(api, "web", "voting-svc", 8080)
    assert not await allowed(api, "vote-bot", "voting-svc", 8080)
    assert not await allowed(api, "web", "voting-svc", 9090)  # Istio: a port no rule names is denied
    assert (await apply(api, SERVER)).status_code == 400  # a Linkerd Server for the same port: refused, not merged
    assert (await api.delete("/v1/tether/policy/istio/emojivoto/voting-allow-web")).status_code == 200
    assert await allowed(api, "vote-bot", "voting-svc", 8080)
    assert (await api.delete("/v1/tether/policy/istio/emojivoto/voting-allow-web")).status_code == 404


async def test_a_server_does_not_select_a_service_of_another_namespace(api):
    await register(api, "voting-svc", 8080, {"tether-port-grpc": "8080"}, namespace="default")
    r = await apply(api, NAMED)
    assert r.status_code == 200
    assert any("Server emojivoto/voting-grpc: service 'voting-svc' is registered in namespace 'default', not "
               "'emojivoto'" in w for w in r.json()["Warnings"]), r.json()["Warnings"]
    assert await allowed(api, "vote-bot", "voting-svc", 8080, ns="default")  # not emojivoto's: the mesh default


async def test_a_namespace_default_covers_its_registered_services_and_policy_get_shows_it(api):
    await register(api, "tally", 9000, {})  # in emojivoto
    await register(api, "outsider", 9000, {}, namespace="default")
    r = await apply(api, """
        apiVersion: v1
        kind: Namespace
        metadata: {name: emojivoto, annotations: {config.linkerd.io/default-inbound-policy: deny}}
    """)
    assert r.status_code == 200, r.text
    assert not await allowed(api, "web", "tally", 9000)  # deny: no Server needed
    assert await allowed(api, "web", "outsider", 9000, ns="default")  # another namespace: the mesh default
    docs = (await api.get("/v1/tether/policy/tally")).json()
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("Namespace", "emojivoto")]
