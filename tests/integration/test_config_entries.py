"""Config entries through py-consul's `config` (unchanged): service-intentions is the intentions
store seen as an entry (one source of truth); other kinds are refused naming them."""

from __future__ import annotations

from urllib.parse import urlparse

import consul
import httpx
import pytest
from consul.exceptions import BadRequest

from tether.testing.agent import run_cli


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


def test_service_intentions_entry_is_the_intentions_store(c, dev_agent):
    assert c.config.set("service-intentions", "db", {"Sources": [
        {"Name": "web", "Action": "allow", "Description": "web reads"}, {"Name": "*", "Action": "deny"}]}) is True
    found = c.config.get("service-intentions", "db")
    assert [(s["Name"], s["Action"], s["Precedence"]) for s in found["Sources"]] == [("*", "deny", 8),
                                                                                     ("web", "allow", 9)]
    assert found["ModifyIndex"] > 0
    exact = httpx.get(f"{dev_agent.url}/v1/connect/intentions/exact", params={"source": "web", "destination": "db"})
    assert exact.json()["Action"] == "allow" and exact.json()["Description"] == "web reads"
    checked = httpx.get(f"{dev_agent.url}/v1/connect/intentions/check", params={"source": "api", "destination": "db"})
    assert checked.json() == {"Allowed": False}  # the entry's `* deny` decides, as any intention does

    # A stale cas changes nothing; the current one replaces the sources (web's intention goes).
    assert c.config.set("service-intentions", "db", {"Sources": [{"Name": "*", "Action": "allow"}]},
                        cas=found["ModifyIndex"] - 1) is False
    assert c.config.set("service-intentions", "db", {"Sources": [{"Name": "*", "Action": "allow"}]},
                        cas=found["ModifyIndex"]) is True
    assert [(s["Name"], s["Action"]) for s in c.config.get("service-intentions", "db")["Sources"]] == [("*", "allow")]
    assert httpx.get(f"{dev_agent.url}/v1/connect/intentions/exact",
                     params={"source": "web", "destination": "db"}).status_code == 404
    assert [e["Name"] for e in c.config.list("service-intentions")] == ["db"]
    assert c.config.delete("service-intentions", "db") is True
    r = httpx.get(f"{dev_agent.url}/v1/config/service-intentions/db")
    assert r.status_code == 404 and 'Config entry not found for "service-intentions" / "db"' in r.text


@pytest.mark.parametrize("kind, body, words", [
    ("service-intentions", {"Sources": [{"Name": "web", "Permissions": [{"Action": "allow"}]}]},
     "Sources[0].Permissions: L7 permissions are not supported"),
    ("service-intentions", {"Sources": [{"Name": "web", "Action": "allow", "Peer": "other"}]}, "SourcePeer"),
    ("service-intentions", {"Sources": [{"Name": "web", "Action": "allow"}], "Bogus": 1}, "Bogus: unknown field"),
    ("service-defaults", {"Protocol": "tcp"}, "'service-defaults' is not implemented by Tether yet"),
    ("mesh", {"TLS": {"Incoming": {}}}, "TLS: not supported by Tether's mesh entry"),
    ("no-such-kind", {}, "invalid config entry kind 'no-such-kind'"),
])
def test_refused_entries_name_the_problem_and_change_nothing(c, kind, body, words):
    with pytest.raises(BadRequest) as caught:
        c.config.set(kind, "mesh" if kind == "mesh" else "web", body)
    assert words in str(caught.value)
    assert c.config.list("service-intentions") == [] and c.config.list("mesh") == []


def test_the_config_cli(dev_agent, tmp_path):
    entry = tmp_path / "db.json"
    entry.write_text('{"Kind": "service-intentions", "Name": "cache", "Sources": [{"Name": "web", "Action": "deny"}]}')
    assert run_cli("config", "write", str(entry), addr=dev_agent.addr).returncode == 0
    listed = run_cli("config", "list", "-kind", "service-intentions", addr=dev_agent.addr)
    assert listed.returncode == 0 and listed.stdout.split() == ["cache"]
    read = run_cli("config", "read", "-kind", "service-intentions", "-name", "cache", addr=dev_agent.addr)
    assert read.returncode == 0 and '"Action": "deny"' in read.stdout
    lost = run_cli("config", "write", "-cas", "-modify-index", "1", str(entry), addr=dev_agent.addr)
    assert lost.returncode == 1 and "CAS failed" in lost.stderr
    entry.write_text('{"Kind": "proxy-defaults", "Name": "global"}')
    refused = run_cli("config", "write", str(entry), addr=dev_agent.addr)
    assert refused.returncode == 2 and "'proxy-defaults' is not implemented" in refused.stderr
    deleted = run_cli("config", "delete", "-kind", "service-intentions", "-name", "cache", addr=dev_agent.addr)
    assert deleted.returncode == 0
    missing = run_cli("config", "read", "-kind", "service-intentions", "-name", "cache", addr=dev_agent.addr)
    assert missing.returncode == 1 and "Config entry not found" in missing.stderr


def test_mesh_destinations_only_is_the_outbound_policy(c, dev_agent):
    def mode():
        policy = httpx.get(f"{dev_agent.url}/v1/tether/egress", timeout=10).json()["Policy"]
        return policy["spec"]["mode"] if policy else "ALLOW_ANY (no policy)"

    assert c.config.set("mesh", "mesh", {"TransparentProxy": {"MeshDestinationsOnly": True}}) is True
    assert mode() == "REGISTRY_ONLY"
    found = c.config.get("mesh", "mesh")
    assert found["TransparentProxy"] == {"MeshDestinationsOnly": True} and found["ModifyIndex"] > 0
    assert c.config.set("mesh", "mesh", {"TransparentProxy": {"MeshDestinationsOnly": False}},
                        cas=found["ModifyIndex"]) is True
    assert mode() == "ALLOW_ANY"
    assert c.config.delete("mesh", "mesh") is True
    assert mode() == "ALLOW_ANY (no policy)" and c.config.list("mesh") == []
