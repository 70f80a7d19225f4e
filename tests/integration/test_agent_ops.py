"""Events, maintenance, reload, status and metrics through py-consul (unchanged), `tether maint`,
and raw HTTP where py-consul has no call."""

from __future__ import annotations

import json
import threading
from urllib.parse import urlparse

import consul
import httpx
import pytest
from consul.exceptions import ConsulException

from tether.testing.agent import ThreadedNode, run_cli, start_tether

NODE = "node1"


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


def test_fire_and_list_events(c, dev_agent):
    fired = c.event.fire("deploy", "v42")
    assert fired["Name"] == "deploy" and fired["Version"] == 1 and fired["ID"]
    c.event.fire("other")
    _, events = c.event.list(name="deploy")
    assert [(e["Name"], e["Payload"], e["ID"]) for e in events] == [("deploy", b"v42", fired["ID"])]
    assert events[0]["LTime"] >= 1
    _, everything = c.event.list()
    assert [e["Name"] for e in everything][-2:] == ["deploy", "other"]
    r = httpx.put(f"{dev_agent.url}/v1/event/fire/big", content=b"x" * 513)
    assert r.status_code == 413 and "512 bytes" in r.text
    r = httpx.put(f"{dev_agent.url}/v1/event/fire/x", params={"node": "web.*"})
    assert r.status_code == 400 and r.text.startswith("node: event filters are not supported")


def test_event_list_blocks_until_an_event_is_fired():
    with ThreadedNode("dev", node=NODE) as node:
        url = urlparse(node.url)
        client = consul.Consul(host=url.hostname, port=url.port)
        index, _ = client.event.list()
        found = {}
        watcher = threading.Thread(target=lambda: found.update(r=client.event.list(index=index, wait="20s")))
        watcher.start()
        node.wait_parked(lambda n: n.store.parked("events/"))
        client.event.fire("wake")
        watcher.join(30)
        assert [e["Name"] for e in found["r"][1]] == ["wake"]


def test_node_and_service_maintenance(c, dev_agent):
    c.agent.service.register("web", service_id="web-1", port=8080)
    assert [e["Service"]["ID"] for e in c.health.service("web", passing=True)[1]] == ["web-1"]
    assert c.agent.service.maintenance("web-1", True, "deploying") is True
    check = c.agent.checks()["_service_maintenance:web-1"]
    assert (check["Status"], check["Notes"], check["ServiceID"]) == ("critical", "deploying", "web-1")
    assert c.health.service("web", passing=True)[1] == []
    assert c.agent.service.maintenance("web-1", False) is True
    assert "_service_maintenance:web-1" not in c.agent.checks()

    assert c.agent.maintenance(True) is True
    check = c.agent.checks()["_node_maintenance"]
    assert check["Status"] == "critical" and "no reason was provided" in check["Notes"]
    assert c.health.service("web", passing=True)[1] == []  # a node in maintenance takes its instances out
    listed = run_cli("maint", addr=dev_agent.addr)
    assert listed.returncode == 0 and f"Name:   {NODE}" in listed.stdout
    done = run_cli("maint", "-disable", addr=dev_agent.addr)
    assert done.returncode == 0 and "_node_maintenance" not in c.agent.checks()
    assert run_cli("maint", "-enable", "-service", "web-1", "-reason", "x", addr=dev_agent.addr).returncode == 0
    assert c.agent.checks()["_service_maintenance:web-1"]["Notes"] == "x"
    bad = run_cli("maint", "-enable", "-disable", addr=dev_agent.addr)
    assert bad.returncode == 2 and "cannot be combined" in bad.stderr
    assert c.agent.service.maintenance("nope", True) is False  # py-consul's answer to a 404
    r = httpx.put(f"{dev_agent.url}/v1/agent/service/maintenance/nope", params={"enable": "true"})
    assert r.status_code == 404 and 'Unknown service ID "nope"' in r.text
    r = httpx.put(f"{dev_agent.url}/v1/agent/maintenance")
    assert (r.status_code, r.text) == (400, "Missing value for enable")
    c.agent.service.deregister("web-1")


def test_status_and_metrics(c, dev_agent):
    assert c.status.leader() == dev_agent.addr and c.status.peers() == [dev_agent.addr]
    metrics = c.agent.metrics()
    assert set(metrics) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    names = {g["Name"] for g in metrics["Gauges"]}
    assert {"tether.agent.services", "tether.agent.checks", "tether.store.revision"} <= names
    text = c.agent.metrics(format_prometheus=True)
    assert "# TYPE tether_agent_checks gauge" in text and 'tether_agent_checks{status="critical"}' in text


def test_reload_applies_config_files_and_reports_a_broken_one(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    agent = start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-config-dir", str(conf))
    try:
        url = urlparse(agent.url)
        client = consul.Consul(host=url.hostname, port=url.port)
        (conf / "web.json").write_text(json.dumps({"service": {"name": "web", "port": 8080}}))
        assert client.agent.reload() is True
        assert set(client.agent.services()) == {"web"}  # applied before the answer
        (conf / "web.json").write_text("{not json")
        with pytest.raises(ConsulException, match="500 Failed reloading config"):
            client.agent.reload()
        assert set(client.agent.services()) == {"web"}
        cli = run_cli("reload", addr=agent.addr)
        assert cli.returncode == 2 and "Failed reloading config" in cli.stderr
        (conf / "web.json").write_text(json.dumps({"service": {"name": "api", "port": 9090}}))
        cli = run_cli("reload", addr=agent.addr)
        assert cli.returncode == 0 and set(client.agent.services()) == {"api"}
    finally:
        agent.stop()
