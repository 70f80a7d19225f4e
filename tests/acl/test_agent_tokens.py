"""The agent's own tokens, the anonymous token, bootstrap recovery, and token files on disk."""

from __future__ import annotations

import json
import os
import stat

import httpx

from tether.core.agent_config import AclConfig
from tether.testing.agent import run_cli, serve_in_process, start_tether

from acl_kit import MANAGEMENT, as_token

RECOVERY = "99999999-8888-7777-6666-555555555555"


async def test_the_agent_recovery_token_opens_agent_endpoints_only():
    config = AclConfig(enabled=True, default_policy="deny", initial_management=MANAGEMENT, agent_recovery=RECOVERY)
    async with serve_in_process("dev", node="n1", acl=config) as url:
        async with as_token(url, RECOVERY) as recovery:
            assert (await recovery.get("/v1/agent/self")).status_code == 200
            assert (await recovery.get("/v1/agent/members")).status_code == 200
            r = await recovery.put("/v1/kv/x", content=b"1")
            assert r.status_code == 403 and "key:write" in r.text
            assert (await recovery.get("/v1/agent/connect/ca/leaf/web")).status_code == 403


async def test_policies_on_the_anonymous_token_apply_to_requests_without_one(admin, anon):
    await admin.put("/v1/kv/public/motd", content=b"hello")
    assert (await anon.get("/v1/kv/public/motd")).status_code == 403
    policy = (await admin.put("/v1/acl/policy", json={"Name": "public-read",
                                                      "Rules": 'key_prefix "public/" { policy = "read" }'})).json()
    anonymous = "00000000-0000-0000-0000-000000000002"
    r = await admin.put(f"/v1/acl/token/{anonymous}", json={"Description": "Anonymous Token",
                                                            "Policies": [{"ID": policy["ID"]}]})
    assert r.status_code == 200, r.text
    assert (await anon.get("/v1/kv/public/motd")).status_code == 200
    assert (await anon.put("/v1/kv/public/motd", content=b"defaced")).status_code == 403
    r = await admin.delete(f"/v1/acl/token/{anonymous}")
    assert r.status_code == 400 and "anonymous" in r.text


async def test_the_default_token_serves_requests_without_one():
    async with serve_in_process("dev", node="n1", acl=AclConfig(enabled=True, default_policy="deny",
                                                                initial_management=MANAGEMENT)) as url:
        async with as_token(url, MANAGEMENT) as admin:
            secret = (await admin.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "web"}]})
                      ).json()["SecretID"]
            assert (await admin.put("/v1/agent/token/default", json={"Token": secret})).status_code == 200
        async with httpx.AsyncClient(base_url=url) as anon:
            assert (await anon.get("/v1/agent/connect/ca/leaf/web")).status_code == 200
            assert (await anon.get("/v1/agent/connect/ca/leaf/db")).status_code == 403


def test_bootstrap_reset_through_the_data_directory(tmp_path):
    conf = tmp_path / "acl.json"
    conf.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny"}}))
    conf.chmod(0o600)
    data = tmp_path / "data"
    agent = start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-data-dir", str(data),
                         "-config-file", str(conf))
    try:
        first = run_cli("acl", "bootstrap", addr=agent.addr)
        assert first.returncode == 0, first.stderr
        again = run_cli("acl", "bootstrap", addr=agent.addr)
        index = again.stderr.split("reset index: ")[1].split(")")[0]
        (data / "acl-bootstrap-reset").write_text(index + "\n")
        fresh = run_cli("acl", "bootstrap", addr=agent.addr)
        assert fresh.returncode == 0, fresh.stderr
        assert not (data / "acl-bootstrap-reset").exists()
        assert fresh.stdout.split("SecretID:")[1].split()[0] != first.stdout.split("SecretID:")[1].split()[0]
    finally:
        agent.stop()


def test_persisted_agent_tokens_are_private_and_survive_a_restart(tmp_path):
    conf = tmp_path / "acl.json"
    conf.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny", "enable_token_persistence": True,
                                        "tokens": {"initial_management": MANAGEMENT}}}))
    conf.chmod(0o600)
    data = tmp_path / "data"
    args = ("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-data-dir", str(data), "-config-file", str(conf))
    agent = start_tether(*args)
    try:
        api = httpx.Client(base_url=agent.url, headers={"X-Consul-Token": MANAGEMENT})
        secret = api.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "web"}]}).json()["SecretID"]
        assert run_cli("acl", "set-agent-token", "default", secret, "-token", MANAGEMENT,
                       addr=agent.addr).returncode == 0
        api.put("/v1/agent/service/register", json={"Name": "web", "Port": 1},
                headers={"X-Consul-Token": secret}).raise_for_status()
    finally:
        agent.stop()
    for name in ("acl-tokens.json", "service-tokens.json"):
        mode = stat.S_IMODE(os.stat(data / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    agent = start_tether(*args)
    try:
        r = httpx.get(agent.url + "/v1/agent/connect/ca/leaf/web", timeout=10)  # the default token, restored
        assert r.status_code == 200, r.text
        assert secret not in "".join(agent.log)
    finally:
        agent.stop()


def test_a_config_file_others_can_read_is_warned_about(tmp_path):
    conf = tmp_path / "acl.json"
    conf.write_text(json.dumps({"acl": {"enabled": True, "tokens": {"initial_management": MANAGEMENT}}}))
    conf.chmod(0o644)
    agent = start_tether("agent", "-dev", "-node", "n1", "-no-managed-proxies", "-config-file", str(conf))
    try:
        assert any(f"chmod 600 {conf}" in line for line in agent.log)
        assert MANAGEMENT not in "".join(agent.log)
    finally:
        agent.stop()
