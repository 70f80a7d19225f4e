"""The HTTP API over a real socket: blocking queries, bad input, KV limits, OpenAPI."""

from __future__ import annotations

import asyncio

import pytest

from tether.testing.agent import serve_in_process, until_parked



async def register(api, body):
    r = await api.put("/v1/agent/service/register", json=body)
    assert r.status_code == 200, r.text


async def test_every_read_has_an_index(api):
    for path in ["/v1/catalog/services", "/v1/catalog/service/x", "/v1/catalog/nodes", "/v1/health/service/x",
                 "/v1/health/connect/x", "/v1/health/checks/x", "/v1/kv/missing"]:
        r = await api.get(path)
        assert int(r.headers["X-Consul-Index"]) >= 1, path


async def test_catalog_watch_wakes_on_registration_not_on_kv_write(api, node):
    r = await api.get("/v1/catalog/services")
    index = r.headers["X-Consul-Index"]
    # Two background watchers of the catalog: the session sweeper, and the agent's own
    # authorization watch (named ports resolve Linkerd Servers against registrations).
    await until_parked(lambda: node.store.parked("catalog/"), more_than=1)
    background = node.store.parked("catalog/")
    watch = asyncio.create_task(api.get("/v1/catalog/services", params={"index": index, "wait": "20s"}))
    await until_parked(lambda: node.store.parked("catalog/"), more_than=background)
    await api.put("/v1/kv/noise", content=b"x")  # irrelevant to the catalog ...
    assert node.store.parked("catalog/") == background + 1 and not watch.done(), "a KV write woke a catalog watcher"
    await register(api, {"Name": "web", "Port": 80})  # ... this is not
    r = await asyncio.wait_for(watch, 10)
    assert "web" in r.json() and int(r.headers["X-Consul-Index"]) > int(index)


async def test_kv_watch_wakes_on_its_key(api, node):
    """The example of docs/testing.md ("Writing a blocking-query test"), as it is there."""
    index = (await api.get("/v1/kv/k")).headers["X-Consul-Index"]
    watch = asyncio.create_task(api.get("/v1/kv/k", params={"index": index, "wait": "20s"}))
    await until_parked(lambda: node.store.parked("kv/k"))  # the GET is waiting in the store
    await api.put("/v1/kv/other", content=b"x")            # an unrelated write ...
    assert node.store.parked("kv/k") == 1 and not watch.done()   # ... leaves it parked
    await api.put("/v1/kv/k", content=b"v")                # this one wakes it
    r = await asyncio.wait_for(watch, 10)
    assert int(r.headers["X-Consul-Index"]) > int(index)


async def test_health_watch_wakes_on_check_status_change(api, node):
    await register(api, {"Name": "pay", "Check": {"TTL": "60s"}})
    r = await api.get("/v1/health/service/pay")
    index = r.headers["X-Consul-Index"]
    assert r.json()[0]["Checks"][-1]["Status"] == "critical"
    background = node.store.parked("catalog/services/")  # the session sweeper watches other catalog prefixes
    watch = asyncio.create_task(api.get("/v1/health/service/pay", params={"index": index, "wait": "20s"}))
    await until_parked(lambda: node.store.parked("catalog/services/"), more_than=background)
    assert (await api.put("/v1/agent/check/pass/service:pay")).status_code == 200
    r = await asyncio.wait_for(watch, 10)
    assert r.json()[0]["Checks"][-1]["Status"] == "passing"


async def test_blocking_wait_times_out_with_same_index(api):
    r = await api.get("/v1/kv/", params={"recurse": "1"})
    index = r.headers["X-Consul-Index"]
    r = await api.get("/v1/kv/", params={"recurse": "1", "index": index, "wait": "200ms"})
    assert r.headers["X-Consul-Index"] == index


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "malformed JSON"),
    (b'{"Name": "web", "Port": 70000}', 400, "Port"),
    (b'{"Name": "web", "Port": "eighty"}', 400, "Port"),
    (b'{"Name": "web", "Portt": 80}', 400, "Portt: unknown field"),
    (b'{"Port": 80}', 400, "Name: missing"),
    (b'{"Name": "web", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}', 400, "not supported"),
    (b'{"Name": "web", "Check": {"TCP": "127.0.0.1:1"}}', 400, "Interval"),
    (b'[]', 400, "expected a JSON object"),
])
async def test_bad_registration_is_refused_and_changes_nothing(api, body, status, words):
    before = (await api.get("/v1/catalog/services")).headers["X-Consul-Index"]
    r = await api.put("/v1/agent/service/register", content=body)
    assert r.status_code == status and words in r.text, r.text
    assert "\n" not in r.text.strip()  # one line
    after = await api.get("/v1/catalog/services")
    assert after.headers["X-Consul-Index"] == before and after.json() == {"consul": []}
    assert (await api.get("/v1/agent/services")).json() == {}


async def test_kv_value_limit(api):
    ok = await api.put("/v1/kv/big", content=b"x" * (512 * 1024))
    assert ok.json() is True
    r = await api.put("/v1/kv/bigger", content=b"x" * (512 * 1024 + 1))
    assert r.status_code == 413 and "512 KiB" in r.text
    assert (await api.get("/v1/kv/bigger")).status_code == 404


async def test_kv_raw_flags_cas_and_delete_cas(api):
    assert (await api.put("/v1/kv/k", params={"flags": 7, "cas": 0}, content=b"one")).json() is True
    assert (await api.put("/v1/kv/k", params={"cas": 0}, content=b"two")).json() is False
    assert (await api.get("/v1/kv/k", params={"raw": ""})).content == b"one"
    entry = (await api.get("/v1/kv/k")).json()[0]
    assert entry["Flags"] == 7
    assert (await api.delete("/v1/kv/k", params={"cas": entry["ModifyIndex"] + 1})).json() is False
    assert (await api.delete("/v1/kv/k", params={"cas": entry["ModifyIndex"]})).json() is True
    assert (await api.put("/v1/kv/k", params={"flags": -1}, content=b"")).status_code == 400


async def test_unknown_ids_are_404(api):
    assert (await api.put("/v1/agent/service/deregister/nope")).status_code == 404
    assert (await api.put("/v1/agent/check/pass/nope")).status_code == 404
    assert (await api.get("/v1/agent/service/nope")).status_code == 404


async def test_agent_service_hash_blocking(api, node):
    await register(api, {"Name": "web", "Port": 80})
    r = await api.get("/v1/agent/service/web")
    digest = r.json()["ContentHash"]
    watch = asyncio.create_task(api.get("/v1/agent/service/web", params={"hash": digest, "wait": "20s"}))
    await until_parked(lambda: node.agent.parked)
    await register(api, {"Name": "other", "Port": 1})  # wakes the agent's waiters, but web is unchanged ...
    await until_parked(lambda: node.agent.parked)  # ... so it waits again
    assert not watch.done()
    await register(api, {"Name": "web", "Port": 81})
    r = await asyncio.wait_for(watch, 10)
    assert r.json()["Port"] == 81 and r.json()["ContentHash"] != digest


async def test_openapi_document(api):
    doc = (await api.get("/openapi.json")).json()
    assert "/v1/agent/service/register" in doc["paths"] and "/v1/kv/{key}" in doc["paths"]


async def test_catalog_register_and_deregister_consul_shape(api):
    body = {"Node": "ext", "Address": "192.0.2.10",
            "Service": {"Service": "legacy", "Port": 25},
            "Check": {"CheckID": "legacy-ok", "Name": "legacy ok", "Status": "passing", "ServiceID": "legacy"}}
    assert (await api.put("/v1/catalog/register", json=body)).status_code == 200
    entries = (await api.get("/v1/health/service/legacy", params={"passing": "1"})).json()
    assert entries[0]["Node"]["Address"] == "192.0.2.10"
    r = await api.put("/v1/catalog/register", json={**body, "Bogus": 1})
    assert r.status_code == 400 and "Bogus" in r.text
    assert (await api.put("/v1/catalog/deregister", json={"Node": "ext"})).status_code == 200
    assert "legacy" not in (await api.get("/v1/catalog/services")).json()


async def test_filter_expressions_are_refused_where_not_implemented(api):
    for path in ["/v1/catalog/node/n1", "/v1/kv/x", "/v1/session/list"]:
        r = await api.get(path, params={"filter": "Service == web"})
        assert r.status_code == 400 and "filter" in r.text, path


async def test_each_service_name_gets_one_stable_virtual_ip(api):
    await register(api, {"Name": "db", "ID": "db-1", "Connect": {"SidecarService": {}}})
    await register(api, {"Name": "db", "ID": "db-2"})
    await register(api, {"Name": "web"})
    vips = (await api.get("/v1/tether/virtual-ips")).json()
    assert set(vips) == {"db", "web"}  # sidecars (connect-proxy kind) get none of their own
    assert len(set(vips.values())) == 2 and all(ip.startswith("240.") for ip in vips.values())
    await api.put("/v1/agent/service/deregister/db-1")
    await api.put("/v1/agent/service/deregister/db-2")
    await register(api, {"Name": "db"})
    assert (await api.get("/v1/tether/virtual-ips")).json()["db"] == vips["db"]  # never reassigned


async def test_a_node_agent_refuses_a_default_policy_of_its_own():
    from tether.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="server's setting"):
        async with serve_in_process("agent", server_addr="127.0.0.1:1", default_policy="deny"):
            pass
