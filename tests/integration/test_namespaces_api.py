"""Service namespaces over the real HTTP API (issue 11 item 3): Consul's `Namespace`
registration field is stored and returned in Consul Enterprise's shapes, reads filter by
`?ns=` (absent: `default`), one name lives in one namespace, a leaf names the namespace the
catalog holds, intentions keep SourceNS/DestinationNS and /check decides with them."""

from __future__ import annotations

import json

from tether.core.spiffe import parse_spiffe_id


async def register(api, name: str, namespace: str | None = None, **extra) -> object:
    body = {"Name": name, "Port": 8080, **extra}
    if namespace is not None:
        body["Namespace"] = namespace
    return await api.put("/v1/agent/service/register", json=body)


async def test_a_registration_keeps_its_namespace_and_reads_filter_by_ns(api):
    assert (await register(api, "web", "team-a")).status_code == 200
    assert (await register(api, "db")).status_code == 200  # no namespace: default, as before namespaces
    assert (await api.get("/v1/agent/service/web")).json()["Namespace"] == "team-a"

    assert (await api.get("/v1/catalog/service/web")).json() == []  # Consul: no ?ns= is the default namespace
    (entry,) = (await api.get("/v1/catalog/service/web", params={"ns": "team-a"})).json()
    assert entry["Namespace"] == "team-a" and entry["ServiceName"] == "web"
    assert [e["Namespace"] for e in (await api.get("/v1/catalog/service/db")).json()] == ["default"]
    (health,) = (await api.get("/v1/health/service/web", params={"ns": "*"})).json()
    assert health["Service"]["Namespace"] == "team-a"
    assert set((await api.get("/v1/catalog/services", params={"ns": "team-a"})).json()) == {"web"}
    assert {"web", "db"} <= set((await api.get("/v1/catalog/services", params={"ns": "*"})).json())
    assert "web" not in (await api.get("/v1/catalog/services")).json()

    r = await api.get("/v1/catalog/service/web", params={"ns": "Team_A"})
    assert r.status_code == 400 and "ns: namespace 'Team_A' is invalid" in r.text


async def test_one_service_name_lives_in_one_namespace(api):
    assert (await register(api, "web", "team-a", ID="web-1")).status_code == 200
    r = await register(api, "web", "team-b", ID="web-2")
    assert r.status_code == 400 and "service 'web' is registered in namespace 'team-a'" in r.text
    assert (await register(api, "web", "team-a", ID="web-2")).status_code == 200  # the same namespace: fine
    r = await register(api, "cache", "a.b")
    assert r.status_code == 400 and "Namespace: namespace 'a.b' is invalid" in r.text


async def test_a_sidecar_and_its_leaf_are_in_the_services_namespace(api):
    body = {"Connect": {"SidecarService": {"Port": 0}}}
    assert (await register(api, "api", "team-a", **body)).status_code == 200
    assert (await api.get("/v1/agent/service/api-sidecar-proxy")).json()["Namespace"] == "team-a"
    leaf = (await api.get("/v1/agent/connect/ca/leaf/api")).json()
    uri = parse_spiffe_id(leaf["ServiceURI"])
    assert (uri.namespace, uri.service) == ("team-a", "api")
    assert "/ns/team-a/" in leaf["ServiceURI"]
    default_leaf = (await api.get("/v1/agent/connect/ca/leaf/unregistered")).json()
    assert "/ns/default/" in default_leaf["ServiceURI"]


async def test_intentions_keep_their_namespaces_and_check_decides_with_them(api):
    assert (await register(api, "db", "team-b")).status_code == 200
    r = await api.post("/v1/connect/intentions", json={
        "SourceNS": "team-a", "SourceName": "web", "DestinationNS": "team-b", "DestinationName": "db", "Action": "allow"})
    assert r.status_code == 200, r.text
    r = await api.put("/v1/connect/intentions/exact", params={"source": "*", "destination": "team-b/db"},
                      json={"Action": "deny"})
    assert r.status_code == 200, r.text
    listed = (await api.get("/v1/connect/intentions")).json()
    assert sorted((i["SourceNS"], i["SourceName"], i["DestinationNS"], i["Precedence"]) for i in listed) == [
        ("default", "*", "team-b", 8), ("team-a", "web", "team-b", 9)]
    exact = (await api.get("/v1/connect/intentions/exact", params={"source": "team-a/web", "destination": "team-b/db"}))
    assert exact.status_code == 200 and exact.json()["Action"] == "allow"

    async def allowed(source: str, destination: str) -> bool:
        r = await api.get("/v1/connect/intentions/check", params={"source": source, "destination": destination})
        assert r.status_code == 200, r.text
        return r.json()["Allowed"]

    assert await allowed("team-a/web", "db")  # db's own namespace: team-b
    assert not await allowed("web", "db")  # a bare source is in default: `default/* -> team-b/db` denies it
    # ... and that deny names `default`: it does not reach team-c, where the dev agent's default (allow) decides
    assert await allowed("team-c/web", "db")
    assert await allowed("team-a/web", "team-b/db")


async def test_a_service_moved_to_another_namespace_gets_a_leaf_naming_it(api):
    assert (await register(api, "mover", "team-a")).status_code == 200
    assert "/ns/team-a/" in (await api.get("/v1/agent/connect/ca/leaf/mover")).json()["ServiceURI"]
    assert (await api.put("/v1/agent/service/deregister/mover")).status_code == 200
    assert (await register(api, "mover", "team-b")).status_code == 200
    assert "/ns/team-b/" in (await api.get("/v1/agent/connect/ca/leaf/mover")).json()["ServiceURI"]  # not the cached one


def test_the_intention_cli_takes_ns_slash_name(dev_agent):
    from tether.testing.agent import run_cli as tether

    r = tether("intention", "create", "-deny", "team-a/web", "team-b/db", addr=dev_agent.addr)
    assert r.returncode == 0 and "Created: team-a/web => team-b/db (deny)" in r.stdout, r.stderr
    got = tether("intention", "get", "team-a/web", "team-b/db", "-json", addr=dev_agent.addr)
    assert got.returncode == 0 and (json.loads(got.stdout)["SourceNS"], json.loads(got.stdout)["Precedence"]) == (
        "team-a", 9)
    assert tether("intention", "check", "team-a/web", "team-b/db", addr=dev_agent.addr).returncode == 1  # denied
    assert tether("intention", "check", "team-c/web", "team-b/db", addr=dev_agent.addr).returncode == 0  # not named
    bad = tether("intention", "create", "-allow", "Team_A/web", "db", addr=dev_agent.addr)
    assert bad.returncode == 2 and "SourceNS: namespace 'Team_A' is invalid" in bad.stderr
