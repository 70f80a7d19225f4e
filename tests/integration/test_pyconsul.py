"""py-consul, a Consul client nobody here wrote, used unchanged against `tether agent -dev`."""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import consul
import pytest

from tether.testing.agent import ThreadedNode


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


def test_register_with_connect_sidecar_and_deregister(c):
    c.agent.service.register("web", service_id="web-1", port=8080, tags=["v1"],
                             connect={"SidecarService": {}})
    services = c.agent.services()
    assert services["web-1"]["Service"] == "web" and services["web-1"]["Port"] == 8080
    sidecar = services["web-1-sidecar-proxy"]
    assert sidecar["Kind"] == "connect-proxy"
    assert 21000 <= sidecar["Port"] <= 21255
    assert sidecar["Proxy"]["DestinationServiceName"] == "web"
    assert sidecar["Proxy"]["DestinationServiceID"] == "web-1"
    assert sidecar["Proxy"]["LocalServicePort"] == 8080
    assert sidecar["Tags"] == ["v1"]  # copied from the parent, as Consul does

    c.agent.service.deregister("web-1")
    services = c.agent.services()
    assert "web-1" not in services and "web-1-sidecar-proxy" not in services  # removed together


def test_catalog_services_and_service(c):
    c.agent.service.register("api", service_id="api-1", port=9000, tags=["blue"], meta={"team": "x"})
    _, services = c.catalog.services()
    assert services["api"] == ["blue"]
    _, instances = c.catalog.service("api")
    assert [(i["ServiceID"], i["ServicePort"], i["ServiceMeta"]) for i in instances] == [("api-1", 9000, {"team": "x"})]
    assert instances[0]["Address"] == "127.0.0.1"  # the node's address
    c.agent.service.deregister("api-1")


def test_health_service_passing_follows_ttl_check(c):
    c.agent.service.register("pay", service_id="pay-1", port=7000, check=consul.Check.ttl("30s"))
    _, entries = c.health.service("pay", passing=True)
    assert entries == []  # a TTL check starts critical
    c.agent.check.ttl_pass("service:pay-1")
    _, entries = c.health.service("pay", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["pay-1"]
    assert {ch["CheckID"]: ch["Status"] for ch in entries[0]["Checks"]}["service:pay-1"] == "passing"
    _, all_entries = c.health.service("pay")
    assert len(all_entries) == 1
    c.agent.service.deregister("pay-1")


def test_health_connect_returns_the_proxies(c):
    c.agent.service.register("db", service_id="db-1", port=5432, connect={"SidecarService": {}})
    _, entries = c.health.connect("db")
    assert [e["Service"]["ID"] for e in entries] == ["db-1-sidecar-proxy"]
    assert entries[0]["Service"]["Proxy"]["DestinationServiceName"] == "db"
    _, passing = c.health.connect("db", passing=True)
    assert passing == []  # its listener is not up: the sidecar is not healthy
    c.agent.service.deregister("db-1")


def test_kv_put_get_delete(c):
    assert c.kv.put("app/config", "v1") is True
    index, data = c.kv.get("app/config")
    assert data["Value"] == b"v1" and int(index) >= data["ModifyIndex"]
    assert c.kv.put("app/config", "v2", cas=data["ModifyIndex"]) is True
    assert c.kv.put("app/config", "v3", cas=data["ModifyIndex"]) is False  # stale cas loses
    assert c.kv.get("app/config")[1]["Value"] == b"v2"
    c.kv.put("app/other", "x", flags=42)
    _, listed = c.kv.get("app/", recurse=True)
    assert [(e["Key"], e["Flags"]) for e in listed] == [("app/config", 0), ("app/other", 42)]
    _, keys = c.kv.get("app/", keys=True)
    assert keys == ["app/config", "app/other"]
    assert c.kv.delete("app/", recurse=True) is True
    assert c.kv.get("app/config") == (c.kv.get("app/config")[0], None)


def test_kv_blocking_get_wakes_on_change():
    with ThreadedNode("dev", node="n1") as node:
        url = urlparse(node.url)
        c = consul.Consul(host=url.hostname, port=url.port)
        c.kv.put("watch/me", "0")
        index, _ = c.kv.get("watch/me")
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(zip(("index", "data"), c.kv.get("watch/me", index=index,
                                                                                       wait="20s"))))
        t.start()
        node.wait_parked(lambda n: n.store.parked("kv/watch/me"))  # py-consul's GET is blocked
        c.kv.put("unrelated/key", "x")  # does not end the blocking read ...
        assert node.call(lambda: node.node.store.parked("kv/watch/me")) == 1 and t.is_alive()
        c.kv.put("watch/me", "1")  # ... this does
        t.join(10)
        assert not t.is_alive()
        assert result["data"]["Value"] == b"1"
        assert int(result["index"]) > int(index)


def test_ttl_warn_and_fail(c):
    c.agent.service.register("batch", service_id="batch-1", check=consul.Check.ttl("30s"))
    c.agent.check.ttl_warn("service:batch-1", notes="slow")
    checks = c.agent.checks()
    assert checks["service:batch-1"]["Status"] == "warning" and checks["service:batch-1"]["Output"] == "slow"
    c.agent.check.ttl_fail("service:batch-1")
    assert c.agent.checks()["service:batch-1"]["Status"] == "critical"
    c.agent.service.deregister("batch-1")


def test_deregister_unknown_service_is_refused(c, dev_agent):
    assert c.agent.service.deregister("no-such-id") is False  # py-consul maps our 404 to False
    import httpx

    response = httpx.put(f"{dev_agent.url}/v1/agent/service/deregister/no-such-id")
    assert response.status_code == 404 and "Unknown service ID" in response.text
