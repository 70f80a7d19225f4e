"""The external-service registry over the API and `tether apply -f`."""

from __future__ import annotations

import asyncio

from tether.testing.agent import run_cli as tether
from tether.testing.agent import until_parked


SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: pg}
spec:
  hosts: [pg.internal]
  addresses: [198.51.100.20/32]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: NONE
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: payments}
spec:
  hosts: ["*.payments.example"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
"""

TCP_ANY = """
apiVersion: tether.dev/v1
kind: ExternalService
metadata: {name: %s}
spec:
  hosts: [%s.example]
  ports: [{number: 6379, name: redis, protocol: TCP}]
  resolution: NONE
"""


async def put_yaml(api, text):
    return await api.put("/v1/tether/external-services", content=text, headers={"content-type": "application/yaml"})


async def test_istio_service_entries_are_stored_as_applied_and_served_as_tether_documents(api):
    r = await put_yaml(api, SERVICE_ENTRY)
    assert r.status_code == 200 and r.json()["Applied"] == ["pg", "payments"]
    docs = (await api.get("/v1/tether/external-services")).json()
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("ServiceEntry", "payments"), ("ServiceEntry", "pg")]
    served = (await api.get("/v1/tether/egress")).json()["Services"]
    assert [(d["kind"], d["metadata"]["name"]) for d in served] == [("ExternalService", "payments"), ("ExternalService", "pg")]
    pg = (await api.get("/v1/tether/external-services/pg")).json()
    assert pg["spec"]["addresses"] == ["198.51.100.20/32"] and pg["spec"]["ports"][0]["number"] == 5432


async def test_overlap_with_an_existing_entry_is_refused_naming_both(api):
    assert (await put_yaml(api, TCP_ANY % ("redis-a", "redis-a"))).status_code == 200
    r = await put_yaml(api, TCP_ANY % ("redis-b", "redis-b"))
    assert r.status_code == 400 and "redis-a" in r.text and "redis-b" in r.text and "nothing was applied" in r.text
    names = [d["metadata"]["name"] for d in (await api.get("/v1/tether/external-services")).json()]
    assert names == ["redis-a"]


async def test_bad_documents_apply_nothing(api):
    bad = SERVICE_ENTRY + "---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {hostz: [a]}\n"
    r = await put_yaml(api, bad)
    assert r.status_code == 400 and "hostz" in r.text
    r = await put_yaml(api, "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n")
    assert r.status_code == 400 and "Gateway" in r.text
    r = await put_yaml(api, "apiVersion: tether.dev/v1\nkind: ExternalService\nmetadata: {name: w}\n"
                            "spec: {hosts: ['*.example.com'], ports: [{number: 443, name: t, protocol: TLS}], resolution: DNS}\n")
    assert r.status_code == 400 and "wildcard" in r.text.lower()
    assert (await api.get("/v1/tether/external-services")).json() == []
    assert (await api.delete("/v1/tether/external-services/nope")).status_code == 404


async def test_egress_state_is_a_blocking_query(api, node):
    r = await api.get("/v1/tether/egress")
    assert r.json() == {"Services": [], "Policy": None}
    index = r.headers["X-Consul-Index"]
    watch = asyncio.create_task(api.get("/v1/tether/egress", params={"index": index, "wait": "20s"}))
    await until_parked(lambda: node.store.parked("egress/"))
    assert not watch.done()
    await put_yaml(api, "apiVersion: tether.dev/v1\nkind: OutboundPolicy\nmetadata: {name: mesh}\nspec: {mode: REGISTRY_ONLY}\n")
    r = await asyncio.wait_for(watch, 10)
    assert r.json()["Policy"]["spec"]["mode"] == "REGISTRY_ONLY"


def test_cli_apply_list_get_delete(dev_agent, tmp_path):
    path = tmp_path / "egress.yaml"
    path.write_text(SERVICE_ENTRY)
    r = tether("apply", "-f", str(path), addr=dev_agent.addr)
    assert r.returncode == 0 and "pg, payments" in r.stdout, r.stderr
    listing = tether("external", "list", addr=dev_agent.addr).stdout
    assert "*.payments.example" in listing and "198.51.100.20/32" in listing and "ALLOW_ANY" in listing
    exported = tether("external", "get", "pg", addr=dev_agent.addr).stdout
    assert tether("external", "delete", "pg", addr=dev_agent.addr).returncode == 0
    assert tether("apply", "-f", "-", addr=dev_agent.addr, stdin=exported).returncode == 0  # round trip
    # A bad policy document in the same input: nothing at all is applied.
    bad = SERVICE_ENTRY.replace("name: pg", "name: pg2").replace("198.51.100.20", "198.51.100.21") + \
        "---\napiVersion: tether.dev/v1\nkind: ServerPolicy\nmetadata: {name: p}\nspec: {bogus: 1}\n"
    r = tether("apply", "-f", "-", addr=dev_agent.addr, stdin=bad)
    # Every problem is named, one per line under a one-line summary; no traceback.
    assert r.returncode == 2 and "spec.bogus: unknown field" in r.stderr and "Traceback" not in r.stderr
    assert "pg2" not in tether("external", "list", addr=dev_agent.addr).stdout


async def test_egress_state_documents_are_reappliable_as_returned(api):
    await put_yaml(api, SERVICE_ENTRY)
    state = (await api.get("/v1/tether/egress")).json()
    r = await api.put("/v1/tether/external-services", json=state["Services"])
    assert r.status_code == 200, r.text


PG_TLS_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pg-tls, namespace: default, uid: 4c1b, resourceVersion: "12"}
spec:
  host: pg.internal
  trafficPolicy: {tls: {mode: SIMPLE, sni: pg.internal}}
status: {}
"""


def served(docs, name):
    return next(d for d in docs["Services"] if d["metadata"]["name"] == name)


async def test_a_destination_rule_is_its_own_object_and_survives_the_entry_being_reapplied(api):
    """Issue 11: re-applying an unchanged ServiceEntry silently dropped its TLS origination."""
    pg_only = SERVICE_ENTRY.split("---")[0]
    assert (await put_yaml(api, pg_only)).status_code == 200
    r = await put_yaml(api, PG_TLS_RULE)
    assert r.status_code == 200 and r.json() == {"Applied": ["DestinationRule default/pg-tls"], "Warnings": []}
    assert served((await api.get("/v1/tether/egress")).json(), "pg")["spec"]["tls"]["mode"] == "SIMPLE"
    assert (await put_yaml(api, pg_only)).status_code == 200  # the entry again, alone
    assert served((await api.get("/v1/tether/egress")).json(), "pg")["spec"]["tls"] == {"mode": "SIMPLE", "sni": "pg.internal"}
    kinds = [d["kind"] for d in (await api.get("/v1/tether/external-services")).json()]
    assert sorted(kinds) == ["DestinationRule", "ServiceEntry"]


async def test_a_destination_rule_before_its_entry_warns_and_then_applies(api):
    r = await put_yaml(api, PG_TLS_RULE)
    assert r.status_code == 200 and "spec.host 'pg.internal' matches no ExternalService" in r.json()["Warnings"][0]
    assert (await put_yaml(api, SERVICE_ENTRY.split("---")[0])).status_code == 200
    assert served((await api.get("/v1/tether/egress")).json(), "pg")["spec"]["tls"]["mode"] == "SIMPLE"
    r = await put_yaml(api, PG_TLS_RULE.replace("pg-tls", "pg-tls-2"))  # a second rule for the same entry
    assert r.status_code == 400 and "already has TLS settings" in r.text and "nothing was applied" in r.text


async def test_same_named_entries_in_two_namespaces_do_not_collide(api):
    entry = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: %s}\n"
             "spec: {hosts: [api.%s.example], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}\n")
    assert (await put_yaml(api, entry % ("team-a", "a"))).status_code == 200
    r = await put_yaml(api, entry % ("team-b", "b"))
    assert r.status_code == 200 and r.json()["Applied"] == ["api.team-b"]
    names = sorted(d["metadata"]["name"] for d in (await api.get("/v1/tether/egress")).json()["Services"])
    assert names == ["api.team-a", "api.team-b"]
