"""Servers resolve, agents cache (issue 9, point 8): a `tether server` and a node agent with
ACLs on, as separate processes. The agent starts before it has a token, as in Consul's
production order, gets one at run time, forwards callers' tokens, caches resolutions and
applies `down_policy` while the server is gone."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from proxy_kit import wait_for
from tether.testing.agent import run_cli, start_tether

MANAGEMENT = "11111111-2222-3333-4444-555555555555"


def config(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o600)
    return path


def acl_block(*, down_policy: str = "extend-cache", token_ttl: str = "30s", extra: str = "") -> str:
    return (f'acl {{\n  enabled = true\n  default_policy = "deny"\n  down_policy = "{down_policy}"\n'
            f'  token_ttl = "{token_ttl}"\n  tokens {{\n{extra}  }}\n}}\n')


def server_and_token(tmp_path: Path) -> tuple[object, httpx.Client]:
    server_conf = config(tmp_path / "server.hcl", acl_block(extra=f'    initial_management = "{MANAGEMENT}"\n'))
    server = start_tether("server", "-data-dir", str(tmp_path / "server"), "-config-file", str(server_conf))
    return server, httpx.Client(base_url=server.url, timeout=30, headers={"X-Consul-Token": MANAGEMENT})


def create(admin: httpx.Client, **body) -> str:
    r = admin.put("/v1/acl/token", json=body)
    assert r.status_code == 200, r.text
    return r.json()["SecretID"]


def test_an_agent_started_without_a_token_syncs_once_it_gets_one(tmp_path):
    server, admin = server_and_token(tmp_path)
    agent_conf = config(tmp_path / "agent.hcl", acl_block())
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "n1", "-config-file", str(agent_conf))
    try:
        assert admin.get("/v1/catalog/node/n1").status_code == 404  # refused: no node:write
        assert any("set-agent-token" in line for line in agent.log)
        # Nor may it read the authorization state: it decides nothing rather than decide on
        # an empty policy (fail closed), and says why.
        local_admin = httpx.Client(base_url=agent.url, timeout=30, headers={"X-Consul-Token": MANAGEMENT})

        def authorize() -> dict:
            r = local_admin.post("/v1/agent/connect/authorize", json={
                "Target": "db", "ClientCertURI": "spiffe://any.tether/ns/default/dc/dc1/svc/web"})
            assert r.status_code == 200, r.text
            return r.json()

        before = authorize()
        assert before["Authorized"] is False and "no authorization state yet" in before["Reason"], before
        assert local_admin.get("/v1/agent/connect/authz-snapshot", params={"service": "db"}).status_code == 503
        node_token = create(admin, NodeIdentities=[{"NodeName": "n1", "Datacenter": "dc1"}])
        done = run_cli("acl", "set-agent-token", "agent", node_token, "-token", MANAGEMENT, addr=agent.addr)
        assert done.returncode == 0 and "successfully set" in done.stdout, done.stderr
        wait_for("the agent to register its node", lambda: admin.get("/v1/catalog/node/n1").status_code == 200)
        wait_for("the agent to load the authorization state",
                 lambda: "no authorization state" not in authorize()["Reason"])
        # The agent's own token is not anyone else's: callers still need theirs.
        r = httpx.put(agent.url + "/v1/kv/x", content=b"1", timeout=10)
        assert r.status_code == 403 and "anonymous token" in r.text
        assert node_token not in "".join(agent.log)  # never logged
    finally:
        agent.stop()
        server.stop()


def test_forwarded_requests_carry_the_callers_token_and_cached_resolutions_survive_the_server(tmp_path):
    server, admin = server_and_token(tmp_path)
    node_token = create(admin, NodeIdentities=[{"NodeName": "n1", "Datacenter": "dc1"}])
    agent_conf = config(tmp_path / "agent.hcl", acl_block(extra=f'    agent = "{node_token}"\n'))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "n1", "-config-file", str(agent_conf))
    try:
        web = create(admin, ServiceIdentities=[{"ServiceName": "web"}])
        other = create(admin, ServiceIdentities=[{"ServiceName": "other"}])
        as_web = httpx.Client(base_url=agent.url, timeout=30, headers={"X-Consul-Token": web})
        r = as_web.put("/v1/agent/service/register", json={"Name": "web", "Port": 8080})
        assert r.status_code == 200, r.text
        assert as_web.get("/v1/health/service/web").json()[0]["Service"]["Service"] == "web"  # forwarded
        assert httpx.get(agent.url + "/v1/health/service/web", timeout=10).status_code == 403  # anonymous
        leaf = as_web.get("/v1/agent/connect/ca/leaf/web")
        assert leaf.status_code == 200, leaf.text  # the server signed with web's token
        assert as_web.get("/v1/agent/connect/ca/leaf/db").status_code == 403

        server.stop(signal.SIGKILL)
        # down_policy extend-cache: what was resolved keeps working, with the cached leaf ...
        again = as_web.get("/v1/agent/connect/ca/leaf/web")
        assert again.status_code == 200 and again.json()["SerialNumber"] == leaf.json()["SerialNumber"]
        assert as_web.get("/v1/agent/services").status_code == 200
        # ... and a token the agent never saw is denied, not waved through.
        r = httpx.get(agent.url + "/v1/agent/connect/ca/leaf/other", headers={"X-Consul-Token": other}, timeout=10)
        assert r.status_code == 403
    finally:
        agent.stop()
        server.stop()


def test_down_policy_deny_refuses_once_the_cache_expires(tmp_path):
    server, admin = server_and_token(tmp_path)
    node_token = create(admin, NodeIdentities=[{"NodeName": "n1", "Datacenter": "dc1"}])
    agent_conf = config(tmp_path / "agent.hcl", acl_block(down_policy="deny", token_ttl="1s",
                                                          extra=f'    agent = "{node_token}"\n'))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "n1", "-config-file", str(agent_conf))
    try:
        web = create(admin, ServiceIdentities=[{"ServiceName": "web"}])
        as_web = httpx.Client(base_url=agent.url, timeout=30, headers={"X-Consul-Token": web})
        assert as_web.get("/v1/agent/connect/ca/leaf/web").status_code == 200
        server.stop(signal.SIGKILL)
        wait_for("the agent to refuse once its cached resolution expired",
                 lambda: as_web.get("/v1/agent/connect/ca/leaf/web").status_code == 403)
        assert as_web.get("/v1/agent/services").json() == {}  # lists are filtered to nothing
    finally:
        agent.stop()
        server.stop()


def test_a_deleted_token_stops_working_at_the_agent(tmp_path):
    server, admin = server_and_token(tmp_path)
    node_token = create(admin, NodeIdentities=[{"NodeName": "n1", "Datacenter": "dc1"}])
    agent_conf = config(tmp_path / "agent.hcl", acl_block(token_ttl="1s", extra=f'    agent = "{node_token}"\n'))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "n1", "-config-file", str(agent_conf))
    try:
        r = admin.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "web"}]})
        token = r.json()
        as_web = httpx.Client(base_url=agent.url, timeout=30, headers={"X-Consul-Token": token["SecretID"]})
        assert as_web.get("/v1/agent/connect/ca/leaf/web").status_code == 200
        admin.delete(f"/v1/acl/token/{token['AccessorID']}").raise_for_status()
        wait_for("the agent to drop the deleted token",
                 lambda: (lambda r: r.status_code == 403 and r.text == "ACL not found")(
                     as_web.get("/v1/agent/connect/ca/leaf/web")))
    finally:
        agent.stop()
        server.stop()
