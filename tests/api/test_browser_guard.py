"""Browsers cannot drive the API (issue 10 item 4), over real sockets: a cross-origin page
and a DNS-rebinding page are refused before any handler runs, while the clients Tether is
for (py-consul, httpx, the CLI) send no Origin and are not affected."""

from __future__ import annotations

import json

import consul
import httpx

from tether.testing.agent import ThreadedNode, open_in_process, start_tether

DENY_ALL = {"SourceName": "*", "DestinationName": "*", "Action": "deny"}


async def test_a_cross_origin_text_plain_post_is_refused_and_writes_nothing(api, node):
    """The form/no-cors POST a browser sends without a preflight, from any web page."""
    before = node.store.index(["intentions/"])
    r = await api.post("/v1/connect/intentions", content=json.dumps(DENY_ALL),
                       headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert r.status_code == 403 and "Origin 'http://evil.example'" in r.text, r.text
    assert node.store.index(["intentions/"]) == before
    assert (await api.get("/v1/connect/intentions")).json() == []
    # The same body without a browser's Origin is an ordinary client's write, and works:
    # the refusal above is the Origin's, not the body's.
    r = await api.post("/v1/connect/intentions", content=json.dumps(DENY_ALL), headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text


async def test_a_rebinding_page_cannot_read_a_leaf(api, node):
    assert (await api.put("/v1/agent/service/register", json={"Name": "web", "Port": 8080})).status_code == 200
    port = node.url.rsplit(":", 1)[1]
    for headers in ({"Host": f"evil.example:{port}"},
                    {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}):  # "same-origin"
        r = await api.get("/v1/agent/connect/ca/leaf/web", headers=headers)
        assert r.status_code == 403 and "DNS rebinding" in r.text and "PRIVATE KEY" not in r.text, r.text
    r = await api.get("/v1/agent/connect/ca/leaf/web")  # Host: 127.0.0.1:port, as dialled
    assert r.status_code == 200 and "PRIVATE KEY" in r.json()["PrivateKeyPEM"]
    r = await api.get("/v1/agent/connect/ca/leaf/web", headers={"Host": f"localhost:{port}"})
    assert r.status_code == 200
    r = await api.get("/v1/agent/connect/ca/leaf/web", headers={"Host": f"N1:{port}"})  # the node name
    assert r.status_code == 200


async def test_the_apis_own_origin_is_allowed(api, node):
    own = node.url  # http://127.0.0.1:port: a page the API itself served
    r = await api.put("/v1/kv/a", content=b"1", headers={"Origin": own})
    assert r.status_code == 200, r.text


def test_py_consul_and_httpx_are_unaffected():
    with ThreadedNode("dev", node="n1") as node:
        port = int(node.url.rsplit(":", 1)[1])
        for host in ("127.0.0.1", "localhost"):
            c = consul.Consul(host=host, port=port)
            c.agent.service.register("api", service_id=f"api-{host}", port=9000)
            assert f"api-{host}" in c.agent.services()
            assert c.kv.put(f"from/{host}", "v")
            assert c.kv.get(f"from/{host}")[1]["Value"] == b"v"
            assert c.connect.ca.roots()["Roots"]
        with httpx.Client(base_url=node.url, timeout=10) as client:
            assert client.put("/v1/kv/httpx", content=b"v").status_code == 200
            assert client.get("/v1/kv/httpx", params={"raw": "1"}).content == b"v"


async def test_configured_origins_get_cors_and_others_still_do_not():
    ui = "https://ui.example.com"
    async with open_in_process("dev", node="n1", allowed_origins=(ui,)) as node, \
            httpx.AsyncClient(base_url=node.url, timeout=10) as api:
        r = await api.options("/v1/kv/a", headers={"Origin": ui, "Access-Control-Request-Method": "PUT",
                                                   "Access-Control-Request-Headers": "content-type,x-consul-token"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ui
        r = await api.put("/v1/kv/a", content=b"1", headers={"Origin": ui})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ui
        assert "X-Consul-Index" in r.headers["access-control-expose-headers"]
        r = await api.options("/v1/kv/a", headers={"Origin": "https://other.example",
                                                   "Access-Control-Request-Method": "PUT"})
        assert r.status_code == 403


async def test_a_node_agent_forwards_an_allowed_origins_request(tmp_path):
    """The agent judges Origin against its own configuration; the server, which the agent
    dials by address, is not asked to know the agent's browser origins."""
    ui = "https://ui.example.com"
    async with open_in_process("server", data_dir=tmp_path / "server") as server, \
            open_in_process("agent", server_addr=server.url.removeprefix("http://"), node="web-node",
                            allowed_origins=(ui,)) as agent, \
            httpx.AsyncClient(base_url=agent.url, timeout=30) as api:
        r = await api.put("/v1/kv/cfg", content=b"v1", headers={"Origin": ui})
        assert r.status_code == 200, r.text
        r = await api.put("/v1/kv/cfg", content=b"v2", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert (await api.get("/v1/kv/cfg", params={"raw": "1"})).content == b"v1"


def test_http_config_in_a_config_file_is_honoured(tmp_path):
    conf = tmp_path / "http.json"
    conf.write_text(json.dumps({"http_config": {"allowed_hosts": ["tether.internal"],
                                                "allowed_origins": ["https://ui.example.com"]}}))
    agent = start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-config-file", str(conf))
    try:
        port = agent.url.rsplit(":", 1)[1]
        assert httpx.get(agent.url + "/v1/kv/x", headers={"Host": f"tether.internal:{port}"}).status_code == 404
        assert httpx.get(agent.url + "/v1/kv/x", headers={"Host": f"other.internal:{port}"}).status_code == 403
        r = httpx.put(agent.url + "/v1/kv/x", content=b"1", headers={"Origin": "https://ui.example.com"})
        assert r.status_code == 200
    finally:
        agent.stop()
