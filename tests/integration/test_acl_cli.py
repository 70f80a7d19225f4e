"""`tether acl ...` as typed (Consul's spellings and output), and ACL config files at start."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tether.testing.agent import run_cli, start_acl_dev_agent, start_tether

MANAGEMENT = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    running = start_acl_dev_agent(tmp_path_factory.mktemp("cli"), MANAGEMENT, default_policy="deny")
    yield running
    running.stop()


def acl(agent, *args, token: str | None = MANAGEMENT, stdin: str | None = None):
    env_args = ("-token", token) if token else ()
    return run_cli("acl", *args, *env_args, addr=agent.addr, stdin=stdin)


def test_policy_token_role_round_trip_in_consuls_layout(agent, tmp_path):
    rules = tmp_path / "web.hcl"
    rules.write_text('key_prefix "web/" {\n  policy = "write"\n}\n')
    made = acl(agent, "policy", "create", "-name", "web-kv", "-description", "web keys", "-rules", f"@{rules}")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0].startswith("ID:           ") and lines[1] == "Name:         web-kv"
    assert lines[2] == "Description:  web keys" and lines[4] == "Rules:" and lines[5] == 'key_prefix "web/" {'

    made = acl(agent, "token", "create", "-description", "web's token", "-policy-name", "web-kv",
               "-service-identity", "web", "-node-identity", "n1:dc1")
    assert made.returncode == 0, made.stderr
    out = made.stdout
    for line in ("Description:      web's token", "Local:            false", "Policies:", "Service Identities:",
                 "   web (Datacenters: all)", "Node Identities:", "   n1 (Datacenter: dc1)"):
        assert line in out.splitlines(), (line, out)
    secret = next(line.split()[1] for line in out.splitlines() if line.startswith("SecretID:"))
    accessor = next(line.split()[1] for line in out.splitlines() if line.startswith("AccessorID:"))
    assert any(line.endswith(" - web-kv") for line in out.splitlines())

    as_json = json.loads(acl(agent, "token", "read", "-id", accessor, "-format", "json").stdout)
    assert as_json["SecretID"] == secret
    itself = acl(agent, "token", "read", "-self", token=secret)
    assert f"AccessorID:       {accessor}" in itself.stdout

    assert run_cli("kv", "put", "web/a", "1", "-token", secret, addr=agent.addr).returncode == 0
    refused = run_cli("kv", "put", "db/a", "1", "-token", secret, addr=agent.addr)
    assert refused.returncode == 2 and "lacks permission 'key:write' on \"db/a\"" in refused.stderr

    secret_file = tmp_path / "token"
    secret_file.write_text(secret + "\n")
    assert run_cli("kv", "put", "web/b", "1", "-token-file", str(secret_file), addr=agent.addr).returncode == 0

    updated = acl(agent, "token", "update", "-id", accessor, "-description", "renamed")
    assert "Description:      renamed" in updated.stdout and " - web-kv" in updated.stdout  # links kept
    clone = acl(agent, "token", "clone", "-id", accessor, "-description", "copy")
    assert clone.returncode == 0 and "Description:      copy" in clone.stdout
    listed = acl(agent, "token", "list")
    assert listed.stdout.count("AccessorID:") >= 4  # management, anonymous, token, clone
    role = acl(agent, "role", "create", "-name", "web-role", "-policy-name", "web-kv")
    assert role.returncode == 0 and "Name:         web-role" in role.stdout
    assert "web-role" in acl(agent, "role", "list").stdout
    assert acl(agent, "role", "delete", "-name", "web-role").returncode == 0
    assert acl(agent, "token", "delete", "-id", accessor).returncode == 0
    gone = acl(agent, "token", "read", "-id", accessor)
    assert gone.returncode == 2 and "ACL not found" in gone.stderr
    assert acl(agent, "policy", "delete", "-name", "web-kv").returncode == 0
    assert "web-kv" not in acl(agent, "policy", "list").stdout


def test_bad_input_is_exit_2_with_one_line(agent):
    for args, words in ((("policy", "create", "-name", "bad", "-rules", 'servce "x" { policy = "read" }'),
                         ("line 1", "servce")),
                        (("token", "create", "-node-identity", "n1"), ("NODE:DATACENTER",)),
                        (("token", "create", "-policy-name", "missing"), ("missing",)),
                        (("token", "read"), ("-id",))):
        r = acl(agent, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and all(w in r.stderr for w in words), (args, r.stderr)


def test_bootstrap_twice_says_why(agent):
    r = acl(agent, "bootstrap", token=None)
    assert r.returncode == 2 and "ACL bootstrap no longer allowed (reset index:" in r.stderr


def test_the_config_file_is_checked_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.hcl"
    bad.write_text('acl {\n  enabled = true\n  default_polcy = "deny"\n}\n')
    r = subprocess.run([sys.executable, "-m", "tether.cli.main", "agent", "-dev", "-http-port", "0",
                        "-config-file", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "acl.default_polcy" in r.stderr and str(bad) in r.stderr
    assert r.stderr.count("\n") == 1


def test_unimplemented_consul_keys_are_one_warning_and_flags_beat_files(tmp_path):
    conf = tmp_path / "consul.json"
    conf.write_text(json.dumps({"datacenter": "from-file", "node_name": "from-file", "ui": True, "encrypt": "x",
                                "ports": {"http": 1}}))
    running = start_tether("agent", "-dev", "-node", "from-flag", "-config-file", str(conf))
    try:
        self_ = httpx.get(running.url + "/v1/agent/self", timeout=10).json()["Config"]
        assert (self_["NodeName"], self_["Datacenter"]) == ("from-flag", "from-file")
        warnings = [line for line in running.log if "not implemented by Tether" in line]
        assert len(warnings) == 1 and "ui" in warnings[0] and "encrypt" in warnings[0]
        assert any("ACLs are off" in line and "docs/acl.md" in line for line in running.log)
    finally:
        running.stop()
