"""`tether get KIND [NAME] -o yaml|json` (issue 11): the stored objects as applied, read
generically, and `get -o yaml | tether apply -f -` is a no-op: nothing is rewritten (the
policy index does not move) and what is stored stays the same."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tether.testing.agent import run_cli as tether

EMOJIVOTO = Path(__file__).resolve().parents[1] / "corpus" / "linkerd" / "emojivoto-policy.yml"
EXTRA = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: loopback, namespace: emojivoto}
spec: {networks: [{cidr: 127.0.0.0/8}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: emojivoto, annotations: {config.linkerd.io/default-inbound-policy: deny}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tally-allow-web, namespace: emojivoto}
spec:
  selector: {matchLabels: {app: tally}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/emojivoto/sa/web]}}]
    to: [{operation: {ports: ["9000"]}}]
---
apiVersion: tether.dev/v1
kind: ServerPolicy
metadata: {name: cache}
spec: {service: cache, defaultPolicy: cluster-authenticated}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: get-pg, namespace: default}
spec:
  hosts: [get-pg.internal]
  addresses: [198.51.100.41/32]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
"""


def stored(addr: str) -> tuple[int, list, list]:
    with httpx.Client(base_url=f"http://{addr}", timeout=30) as api:
        policy = api.get("/v1/tether/policy")
        return int(policy.headers["X-Consul-Index"]), policy.json(), api.get("/v1/tether/external-services").json()


def test_get_prints_what_apply_stored_and_applying_it_back_is_a_no_op(dev_agent, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(EXTRA)
    for path in (EMOJIVOTO, extra):
        r = tether("apply", "-f", str(path), addr=dev_agent.addr)
        assert r.returncode == 0, r.stderr
    before = stored(dev_agent.addr)

    table = tether("get", "servers", "-n", "emojivoto", addr=dev_agent.addr)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert ["Server", "emojivoto", "voting-grpc"] in rows and ["Server", "emojivoto", "web-http"] in rows

    one = tether("get", "server", "voting-grpc", "-n", "emojivoto", "-o", "yaml", addr=dev_agent.addr)
    assert one.returncode == 0, one.stderr
    doc = yaml.safe_load(one.stdout)
    assert (doc["kind"], doc["metadata"]["name"], doc["spec"]["port"]) == ("Server", "voting-grpc", "grpc")

    for kind in ("Server", "serverauthorizations", "AuthorizationPolicy", "authorizationpolicies.security.istio.io",
                 "NetworkAuthentication", "namespaces", "serverpolicy", "meshpolicy", "serviceentries"):
        printed = tether("get", kind, "-o", "yaml", addr=dev_agent.addr)
        assert printed.returncode == 0, (kind, printed.stderr)
        listed = yaml.safe_load(printed.stdout)
        assert listed["kind"] == "List" and listed["items"], kind
        r = tether("apply", "-f", "-", addr=dev_agent.addr, stdin=printed.stdout)
        assert r.returncode == 0, (kind, r.stderr)
    after = stored(dev_agent.addr)
    assert after[1] == before[1] and after[2] == before[2]  # every object the same
    assert after[0] == before[0]  # and none rewritten: the policy index did not move

    as_json = tether("get", "meshtlsauthentication", "-o", "json", addr=dev_agent.addr)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["kind"] == "List"


def test_get_names_what_is_wrong(dev_agent):
    r = tether("get", "gizmos", addr=dev_agent.addr)
    assert r.returncode == 2 and "KIND: 'gizmos' is not a kind Tether stores" in r.stderr
    r = tether("get", "server", "no-such", addr=dev_agent.addr)
    assert r.returncode != 0 and "no server named 'no-such'" in r.stderr
    r = tether("get", "server", "-o", "xml", addr=dev_agent.addr)
    assert r.returncode == 2 and "use table, yaml, json" in r.stderr
    empty = tether("get", "networkauthentications", "-n", "nowhere", addr=dev_agent.addr)
    assert empty.returncode == 0 and "No networkauthentications found" in empty.stdout


def test_a_namespace_default_is_deleted_with_the_file_that_applied_it(dev_agent, tmp_path):
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: locked, annotations: "
                    "{config.linkerd.io/default-inbound-policy: deny}}\n")
    assert tether("apply", "-f", str(path), addr=dev_agent.addr).returncode == 0
    assert "locked" in tether("get", "namespaces", addr=dev_agent.addr).stdout
    r = tether("delete", "-f", str(path), addr=dev_agent.addr)
    assert r.returncode == 0 and "Deleted Namespace locked (its default inbound policy)" in r.stdout, r.stderr
    assert "locked" not in tether("get", "namespaces", addr=dev_agent.addr).stdout
