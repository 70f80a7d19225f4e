"""`tether apply -f` with Kubernetes-shaped input (issue 11): `kind: List`, multi-document
streams, managed fields ignored, every problem of a file in one run with its document,
kind/name and path, the per-kind hint shown, and warnings for what has no effect yet."""

from __future__ import annotations

from tether.testing.agent import run_cli as tether

LIST = """\
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: cli-pg, namespace: default, uid: 7a, resourceVersion: "3", managedFields: [{manager: kubectl}]}
  spec:
    hosts: [cli-pg.internal]
    addresses: [198.51.100.40/32]
    ports: [{number: 5432, name: tcp, protocol: TCP}]
    resolution: NONE
  status: {}
- apiVersion: policy.linkerd.io/v1beta1
  kind: Server
  metadata: {name: cli-db, namespace: default, uid: 8b}
  spec: {podSelector: {matchLabels: {app: cli-db}}, port: 5432}
  status: {conditions: []}
"""


def test_a_kubectl_list_applies_with_its_managed_fields_ignored(dev_agent):
    r = tether("apply", "-f", "-", addr=dev_agent.addr, stdin=LIST)
    assert r.returncode == 0, r.stderr
    assert "Applied external services: cli-pg" in r.stdout and "Server default/cli-db" in r.stdout
    assert "warning: Server default/cli-db: service 'cli-db' (from spec.podSelector) is not registered" in r.stderr


def test_every_problem_of_both_halves_is_reported_in_one_run_with_its_hint(dev_agent):
    bad = LIST.replace("protocol: TCP", "protocl: TCP").replace("port: 5432}", "prot: 5432}") + """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec: {selector: {istio: egressgateway}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec: {}
"""
    r = tether("apply", "-f", "-", addr=dev_agent.addr, stdin=bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr
    assert "document 1.1 (ServiceEntry 'cli-pg'): spec.ports[0].protocl: unknown field" in err
    assert "document 2 (Gateway 'istio-egressgateway'): kind Gateway of apiVersion networking.istio.io/v1" in err
    assert "document 1.2 (Server cli-db): spec.prot: unknown field (did you mean 'port'?)" in err
    assert "document 3 (AuthorizationPolicy deny-all): spec.selector: Tether maps a policy to the service" in err
    assert "not supported; use tether.dev/v1 or policy.linkerd.io" not in err  # the old, misleading answer


def test_delete_f_removes_what_apply_f_made_and_get_lists_it_back(dev_agent, tmp_path):
    path = tmp_path / "objects.yaml"
    path.write_text(LIST + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cli-pg-tls, namespace: default}
spec: {host: cli-pg.internal, trafficPolicy: {tls: {mode: SIMPLE}}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: cli-accounts, namespace: default}
spec: {identities: ["*"]}
""")
    assert tether("apply", "-f", str(path), addr=dev_agent.addr).returncode == 0
    r = tether("delete", "-f", str(path), addr=dev_agent.addr)
    assert r.returncode == 0, r.stderr
    for what in ("external service cli-pg", "Server default/cli-db", "DestinationRule default/cli-pg-tls",
                 "MeshTLSAuthentication default/cli-accounts"):
        assert f"Deleted {what}" in r.stdout
    again = tether("delete", "-f", str(path), addr=dev_agent.addr)
    assert again.returncode == 1 and "Not found (already deleted?): Server default/cli-db" in again.stdout
    r = tether("delete", "-f", "-", addr=dev_agent.addr, stdin="apiVersion: tether.dev/v1\nkind: MeshPolicy\nspec: {}\n")
    assert r.returncode == 2 and "MeshPolicy holds mesh-wide settings" in r.stderr
