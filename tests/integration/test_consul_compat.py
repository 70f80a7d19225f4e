"""Issue 19's bugs, each with the request a real Consul client sends (py-consul, unchanged,
or the raw HTTP its call sends), against a `tether agent -dev` subprocess."""

from __future__ import annotations

from urllib.parse import urlparse

import consul
import httpx
import pytest
from consul.exceptions import ACLDisabled, ConsulException

NODE = "node1"  # start_dev_agent's node name


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


@pytest.fixture(scope="module")
def http(dev_agent):
    with httpx.Client(base_url=dev_agent.url, timeout=30) as client:
        yield client


# 1. catalog/register and deregister read their keys case-insensitively (py-consul sends lowercase).
def test_catalog_register_with_lowercase_keys(c, http):
    check = {"Node": "ext1", "CheckID": "service:redis1", "Name": "Redis health check", "Status": "passing",
             "ServiceID": "redis1"}
    assert c.catalog.register("ext1", "192.0.2.10", service={"Service": "redis", "ID": "redis1", "Port": 8000},
                              check=check) is True
    _, instances = c.catalog.service("redis")
    assert [(i["Node"], i["Address"], i["ServiceID"], i["ServicePort"]) for i in instances] == [
        ("ext1", "192.0.2.10", "redis1", 8000)]
    _, checks = c.health.checks("redis")
    assert [(k["CheckID"], k["Status"]) for k in checks] == [("service:redis1", "passing")]
    assert c.catalog.deregister("ext1", service_id="redis1") is True
    assert c.catalog.service("redis")[1] == []
    assert c.catalog.deregister("ext1") is True
    assert c.catalog.node("ext1")[1] is None
    r = http.put("/v1/catalog/register", json={"node": "ext2", "adress": "192.0.2.11"})
    assert r.status_code == 400 and "adress: unknown field" in r.text  # folded, never silently dropped


# 2. Write routes take PUT as well as POST: py-consul PUTs authorize.
def test_connect_authorize_by_put(c, http):
    client_uri = "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"
    answer = c.agent.connect.authorize("db", client_uri, "04:00")
    assert set(answer) == {"Authorized", "Reason"} and answer["Authorized"] is True
    post = http.post("/v1/agent/connect/authorize", json={"Target": "db", "ClientCertURI": client_uri})
    assert post.status_code == 200
    assert http.patch("/v1/agent/connect/authorize").status_code == 405  # other methods are still refused


# 3. A check registered on its own gets its Name as CheckID, also on a service.
def test_two_checks_on_one_service_keep_their_names(c):
    c.agent.service.register("foo", service_id="foo1", port=7001)
    assert c.agent.check.register("foo", check=consul.Check.ttl("100ms"), service_id="foo1") is True
    assert c.agent.check.register("bar", check=consul.Check.ttl("100ms"), service_id="foo1") is True
    checks = c.agent.checks()
    assert {cid: ch["ServiceID"] for cid, ch in checks.items() if ch["ServiceID"] == "foo1"} == {"foo": "foo1",
                                                                                                 "bar": "foo1"}
    c.agent.service.deregister("foo1")


# 4. Node checks are listed once.
def test_node_checks_are_listed_once(c):
    c.agent.check.register("disk", check=consul.Check.ttl("1m"))
    _, state = c.health.state("any")
    ids = [(ch["Node"], ch["CheckID"]) for ch in state]
    assert len(ids) == len(set(ids)) and (NODE, "serfHealth") in ids and (NODE, "disk") in ids
    _, on_node = c.health.node(NODE)
    ids = [ch["CheckID"] for ch in on_node]
    assert sorted(ids) == sorted(set(ids)) and "serfHealth" in ids
    c.agent.check.deregister("disk")


# 5. Another datacenter: 500 No path to datacenter, for reads and writes; an unknown peer: empty.
def test_unknown_datacenter_and_peer(c, http):
    with pytest.raises(ConsulException, match="500 No path to datacenter"):
        c.catalog.services(dc="dc2")
    with pytest.raises(ConsulException, match="No path to datacenter"):
        c.kv.put("k", "v", dc="dc2")
    with pytest.raises(ConsulException, match="No path to datacenter"):
        c.catalog.register("ext3", "192.0.2.12", dc="dc2")
    assert c.kv.get("k")[1] is None and c.catalog.node("ext3")[1] is None  # nothing went into dc1
    r = http.put("/v1/catalog/register", json={"Node": "ext3", "Address": "192.0.2.12", "Datacenter": "dc2"})
    assert (r.status_code, r.text) == (500, "No path to datacenter")
    assert c.catalog.services(dc="dc1")[1]["consul"] == []  # the local datacenter by name is served
    c.agent.service.register("web", service_id="web-1", port=8080)
    for path in ("/v1/health/service/web", "/v1/catalog/service/web", "/v1/catalog/nodes", "/v1/health/state/any"):
        r = http.get(path, params={"peer": "nobody"})
        assert (r.status_code, r.json()) == (200, []), path
        assert http.get(path).json() != [], path
    c.agent.service.deregister("web-1")


# 6. agent/self has what clients read; members' shape; ?wan=1 names <node>.<dc>.
def test_agent_self_and_members(c, dev_agent):
    me = c.agent.self()
    assert me["Stats"]["consul"]["leader_addr"] == dev_agent.addr
    assert me["Config"]["NodeName"] == NODE and me["DebugConfig"]["NodeName"] == NODE
    assert len(me["Coord"]["Vec"]) == 8
    members = c.agent.members()
    assert set(me["Member"]) == set(members[0])
    assert {"ProtocolCur", "DelegateCur", "Tags", "Port"} <= set(me["Member"])
    assert [m["Name"] for m in c.agent.members(wan=True)] == [f"{NODE}.dc1"]


# 7. agent/services leaves out the empty fields Consul omits.
def test_agent_services_omit_empty_fields(c):
    c.agent.service.register("plain", service_id="plain-1", port=9001)
    svc = c.agent.services()["plain-1"]
    assert not {"TaggedAddresses", "SocketPath", "Kind", "Connect", "Proxy"} & set(svc)
    assert (svc["Service"], svc["Port"], svc["Datacenter"]) == ("plain", 9001, "dc1")
    c.agent.service.deregister("plain-1")


# 8. GET /v1/kv/ without a key: 400 Missing key name, not a 404 a watcher would wait on.
def test_kv_without_a_key(http):
    r = http.get("/v1/kv/")
    assert (r.status_code, r.text) == (400, "Missing key name")
    assert http.get("/v1/kv/", params={"recurse": ""}).status_code in (200, 404)


# 9. Unimplemented routes answer like a disabled Consul feature, with X-Consul-Index; the consul service.
def test_unimplemented_routes_and_the_consul_service(c, http):
    with pytest.raises(ACLDisabled, match="Coordinate support disabled"):
        c.coordinate.nodes()
    with pytest.raises(ConsulException, match="501 prepared queries are not implemented"):
        c.query.list()
    r = http.get("/v1/operator/autopilot/health")
    assert r.status_code == 501 and int(r.headers["X-Consul-Index"]) >= 1
    assert c.catalog.services()[1]["consul"] == []


def test_gossip_routes_say_why_they_are_missing(http):
    r = http.put("/v1/agent/leave")
    assert r.status_code == 501 and "no gossip" in r.text and "X-Consul-Index" in r.headers
    assert http.get("/v1/agent/self").status_code == 200  # a prefix never shadows a real route


def test_every_server_route_refuses_another_datacenter(http):
    for path in ("/v1/connect/intentions", "/v1/connect/ca/roots", "/v1/tether/egress", "/v1/session/list",
                 "/v1/event/list", "/v1/config/service-intentions"):
        r = http.get(path, params={"dc": "dc2"})
        assert (r.status_code, r.text) == (500, "No path to datacenter"), path
