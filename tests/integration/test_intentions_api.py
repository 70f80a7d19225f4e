"""Intention and policy HTTP API over a real socket: Consul's shapes, blocking queries, bad input,
py-consul's `connect.intentions` unchanged, all-or-nothing policy apply, mesh settings."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import consul
import httpx
import pytest

from tether.testing.agent import serve_in_process, until_parked

EXACT = "/v1/connect/intentions/exact"
SERVER_POLICY = """\
apiVersion: tether.dev/v1
kind: ServerPolicy
spec:
  service: db
  port: 5432
  defaultPolicy: deny
  authorizations:
    - name: app
      identities: [web]
"""


async def put_exact(api, source, destination, body):
    return await api.put(EXACT, params={"source": source, "destination": destination}, json=body)


async def test_exact_upsert_read_delete_in_consuls_shape(api):
    r = await put_exact(api, "web", "db", {"SourceType": "consul", "Action": "allow", "Description": "storefront"})
    assert r.status_code == 200 and r.json() is True
    assert r.headers["X-Consul-Default-ACL-Policy"] == "allow"  # the dev agent's default intention
    r = await api.get(EXACT, params={"source": "web", "destination": "db"})
    got = r.json()
    assert {k: got[k] for k in ("SourceName", "DestinationName", "Action", "Description", "Precedence", "SourceType",
                                "SourceNS", "DestinationNS", "Meta")} == {
        "SourceName": "web", "DestinationName": "db", "Action": "allow", "Description": "storefront", "Precedence": 9,
        "SourceType": "consul", "SourceNS": "default", "DestinationNS": "default", "Meta": {}}
    assert got["CreateIndex"] == got["ModifyIndex"] == int(r.headers["X-Consul-Index"])
    # An upsert keeps the ID and CreateIndex and moves ModifyIndex.
    await put_exact(api, "web", "db", {"Action": "deny", "Meta": {"owner": "team-a"}})
    again = (await api.get(EXACT, params={"source": "web", "destination": "db"})).json()
    assert (again["ID"], again["CreateIndex"]) == (got["ID"], got["CreateIndex"])
    assert again["ModifyIndex"] > got["ModifyIndex"] and again["Action"] == "deny" and again["Meta"] == {"owner": "team-a"}
    assert (await api.delete(EXACT, params={"source": "web", "destination": "db"})).json() is True
    r = await api.get(EXACT, params={"source": "web", "destination": "db"})
    assert r.status_code == 404 and "web -> db" in r.text


async def test_legacy_id_routes_and_duplicate_refused(api):
    r = await api.post("/v1/connect/intentions", json={"SourceName": "web", "DestinationName": "db",
                                                        "SourceType": "consul", "Action": "allow", "Meta": {"a": "b"}})
    ident = r.json()["ID"]
    r = await api.post("/v1/connect/intentions", json={"SourceName": "web", "DestinationName": "db", "Action": "deny"})
    assert r.status_code == 409
    assert r.text.startswith(f"an intention web -> db exists already (ID {ident}); use -replace")
    one = (await api.get(f"/v1/connect/intentions/{ident}")).json()
    assert one["ID"] == ident and one["Meta"] == {"a": "b"}
    # PUT by ID may move the intention to another pair; the old pair is then free.
    r = await api.put(f"/v1/connect/intentions/{ident}", json={"SourceName": "web", "DestinationName": "cache",
                                                                "Action": "deny"})
    assert r.status_code == 200, r.text
    assert (await api.get(EXACT, params={"source": "web", "destination": "db"})).status_code == 404
    assert (await api.get(EXACT, params={"source": "web", "destination": "cache"})).json()["ID"] == ident
    # ... but not onto a pair that is taken.
    await put_exact(api, "api", "db", {"Action": "allow"})
    r = await api.put(f"/v1/connect/intentions/{ident}", json={"SourceName": "api", "DestinationName": "db",
                                                                "Action": "deny"})
    assert r.status_code == 409 and "api -> db exists already" in r.text
    assert (await api.delete(f"/v1/connect/intentions/{ident}")).status_code == 200
    assert (await api.get(f"/v1/connect/intentions/{ident}")).status_code == 404
    assert (await api.delete(f"/v1/connect/intentions/{ident}")).status_code == 404


async def test_list_check_and_match_follow_consul_precedence(api):
    for source, destination, action in [("*", "*", "deny"), ("web", "*", "allow"), ("*", "db", "deny"),
                                        ("web", "db", "allow"), ("api", "cache", "allow")]:
        assert (await put_exact(api, source, destination, {"Action": action})).status_code == 200
    listed = (await api.get("/v1/connect/intentions")).json()
    assert [i["Precedence"] for i in listed] == sorted((i["Precedence"] for i in listed), reverse=True)
    r = await api.get("/v1/connect/intentions/match", params=[("by", "destination"), ("name", "db"), ("name", "x")])
    found = r.json()
    assert [(i["SourceName"], i["DestinationName"]) for i in found["db"]] == [("web", "db"), ("*", "db"), ("web", "*"), ("*", "*")]
    assert [(i["SourceName"], i["DestinationName"]) for i in found["x"]] == [("web", "*"), ("*", "*")]
    by_source = (await api.get("/v1/connect/intentions/match", params={"by": "source", "name": "web"})).json()["web"]
    assert [(i["SourceName"], i["DestinationName"]) for i in by_source] == [("web", "db"), ("*", "db"), ("web", "*"), ("*", "*")]

    async def allowed(source, destination):
        r = await api.get("/v1/connect/intentions/check", params={"source": source, "destination": destination})
        return r.json()["Allowed"]

    assert await allowed("web", "db")  # exact allow beats `* -> db` deny
    assert not await allowed("api", "db")  # `* -> db` deny
    assert await allowed("web", "other")  # `web -> *` allow beats `* -> *` deny
    assert not await allowed("api", "other")  # `* -> *` deny
    r = await api.get("/v1/connect/intentions", params={"filter": 'SourceName == "web"'})
    assert r.status_code == 400 and "filter" in r.text  # refused, never silently ignored


async def test_list_is_a_blocking_query_woken_by_intentions_only(api, node):
    index = (await api.get("/v1/connect/intentions")).headers["X-Consul-Index"]
    await until_parked(lambda: node.store.parked("intentions/"))  # the agent's own authorization watch
    parked = node.store.parked("intentions/")
    watch = asyncio.create_task(api.get("/v1/connect/intentions", params={"index": index, "wait": "20s"}))
    await until_parked(lambda: node.store.parked("intentions/"), more_than=parked)
    await api.put("/v1/kv/noise", content=b"x")
    assert not watch.done() and node.store.parked("intentions/") == parked + 1, "a KV write woke an intentions watcher"
    await put_exact(api, "web", "db", {"Action": "deny"})
    r = await asyncio.wait_for(watch, 10)
    assert int(r.headers["X-Consul-Index"]) > int(index) and r.json()[0]["SourceName"] == "web"


@pytest.mark.parametrize("params, body, status, needle", [
    ({"source": "we b", "destination": "db"}, {"Action": "allow"}, 400, "'we b'"),
    ({"source": "web", "destination": "d*"}, {"Action": "allow"}, 400, "'*' may only stand alone"),
    ({"source": "web"}, {"Action": "allow"}, 400, "destination"),
    ({"source": "web", "destination": "db"}, {"Action": "permit"}, 400, "'permit'"),
    ({"source": "web", "destination": "db"}, {"Action": "allow", "Colour": "red"}, 400, "Colour: unknown field"),
    ({"source": "web", "destination": "db"}, {"Permissions": [{"Action": "allow"}]}, 400, "L7 permissions"),
])
async def test_bad_intentions_are_refused_naming_the_value(api, params, body, status, needle):
    r = await api.put(EXACT, params=params, json=body)
    assert r.status_code == status and needle in r.text, r.text
    assert (await api.get("/v1/connect/intentions")).json() == []


async def test_py_consul_connect_intentions_unchanged(api):
    url = urlparse(str(api.base_url))
    c = consul.Consul(host=url.hostname, port=url.port)

    def run() -> None:
        assert c.connect.intentions.upsert("web", "db", action="allow", description="d", meta={"k": "v"}) is True
        assert c.connect.intentions.upsert("*", "db", action="deny") is True
        got = c.connect.intentions.read("web", "db")
        assert (got["Action"], got["Description"], got["Meta"]) == ("allow", "d", {"k": "v"})
        assert {(i["SourceName"], i["Action"]) for i in c.connect.intentions.list()} == {("web", "allow"), ("*", "deny")}
        assert c.connect.intentions.check("web", "db") is True
        assert c.connect.intentions.check("api", "db") is False
        assert [i["SourceName"] for i in c.connect.intentions.match("destination", "db")["db"]] == ["web", "*"]
        assert c.connect.intentions.delete("web", "db") is True
        assert c.connect.intentions.check("web", "db") is False  # now `* -> db` deny decides

    await asyncio.to_thread(run)


# --- server policy and mesh settings ------------------------------------------------------------


async def test_policy_apply_get_delete(api):
    r = await api.put("/v1/tether/policy", params={"file": "db.yaml"}, content=SERVER_POLICY.encode())
    assert r.status_code == 200, r.text
    assert r.json()["ServerPolicies"] == ["db-5432 (db:5432)"]
    docs = (await api.get("/v1/tether/policy/db")).json()
    assert docs[0]["spec"]["authorizations"] == [{"name": "app", "identities": ["web"]}]
    # What GET returns is re-appliable as JSON, unchanged.
    r = await api.put("/v1/tether/policy", content=json.dumps(docs).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and (await api.get("/v1/tether/policy/db")).json() == docs
    assert (await api.delete("/v1/tether/policy/db", params={"port": 5432})).status_code == 200
    assert (await api.get("/v1/tether/policy/db")).json() == []
    r = await api.delete("/v1/tether/policy/db", params={"port": 5432})
    assert r.status_code == 404 and "db:5432" in r.text


@pytest.mark.parametrize("bad, needle", [
    ("apiVersion: tether.dev/v1\nkind: ServerPolicy\nspec: {service: api, colour: red}\n", "spec.colour: unknown field"),
    ("apiVersion: tether.dev/v1\nkind: ServerPolicy\nspec:\n  service: api\n  authorizations:\n"
     "    - {name: lb, unauthenticated: true, networks: [{cidr: 10.0.0.300/8}]}\n", "'10.0.0.300/8' is not a CIDR"),
    ("apiVersion: tether.dev/v1\nkind: MeshPolicy\nspec: {defaultPolicy: allow-all}\n", "allow-all"),
    ("apiVersion: tether.dev/v1\nkind: ServiceIntentions\nspec: {destination: db, sources: [{name: 'x_y', action: allow}]}\n", "x_y"),
])
async def test_a_multi_document_apply_with_one_bad_document_writes_nothing(api, bad, needle):
    good = SERVER_POLICY + "---\napiVersion: tether.dev/v1\nkind: ServiceIntentions\n" \
        "spec: {destination: db, sources: [{name: web, action: allow}]}\n"
    before = (await api.get("/v1/tether/policy")).json()
    index = (await api.get("/v1/internal/tether/authz")).headers["X-Consul-Index"]
    r = await api.put("/v1/tether/policy", params={"file": "all.yaml"}, content=(good + "---\n" + bad).encode())
    assert r.status_code == 400 and needle in r.text and "all.yaml: document 3" in r.text, r.text
    assert (await api.get("/v1/tether/policy")).json() == before
    assert (await api.get("/v1/connect/intentions")).json() == []
    assert (await api.get("/v1/internal/tether/authz")).headers["X-Consul-Index"] == index


async def test_mesh_settings_change_only_the_fields_given(api):
    r = await api.put("/v1/tether/mesh", json={"defaultIntention": "deny"})
    assert r.status_code == 200 and r.json()["spec"]["defaultIntention"] == "deny"
    r = await api.put("/v1/tether/policy", content=b"apiVersion: tether.dev/v1\nkind: MeshPolicy\n"
                                                     b"spec: {clusterNetworks: [{cidr: 10.0.0.0/8}]}\n")
    assert r.status_code == 200 and r.json()["Mesh"] == ["clusterNetworks"]
    spec = (await api.get("/v1/tether/mesh")).json()["spec"]
    assert spec["defaultIntention"] == "deny" and spec["clusterNetworks"] == [{"cidr": "10.0.0.0/8"}]
    r = await api.get("/v1/connect/intentions/check", params={"source": "web", "destination": "db"})
    assert r.json() == {"Allowed": False} and r.headers["X-Consul-Default-ACL-Policy"] == "deny"
    r = await api.put("/v1/tether/mesh", json={"defaultIntention": "maybe"})
    assert r.status_code == 400 and "'maybe'" in r.text


async def test_server_role_defaults_to_deny_and_the_flag_overrides(tmp_path):
    check = ("/v1/connect/intentions/check", {"source": "web", "destination": "db"})

    async def get(url, path, params=None):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await client.get(path, params=params)

    async with serve_in_process("server", data_dir=tmp_path / "s") as url:
        r = await get(url, *check)
        assert r.json() == {"Allowed": False} and r.headers["X-Consul-Default-ACL-Policy"] == "deny"
    async with serve_in_process("server", data_dir=tmp_path / "s", default_policy="allow") as url:
        assert (await get(url, *check)).json() == {"Allowed": True}
    async with serve_in_process("server", data_dir=tmp_path / "s") as url:  # no flag: the stored value is kept
        assert (await get(url, "/v1/tether/mesh")).json()["spec"]["defaultIntention"] == "allow"
