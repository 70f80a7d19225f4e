"""`tether intention ...` and `tether policy ...` end to end against real processes: Consul's
spellings as typed, exit codes (0 yes, 1 no, 2 error), one clear line for bad input, and a
`tether server` + `tether agent -server-addr` pair where a CLI write changes the agent's answer."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tether.testing.agent import start_tether
from tether.testing.agent import run_cli as tether

POLICY = """\
apiVersion: tether.dev/v1
kind: ServerPolicy
spec:
  service: db
  port: 5432
  defaultPolicy: deny
  authorizations:
    - {name: app, identities: [web]}
    - name: lb
      unauthenticated: true
      networks: [{cidr: 192.0.2.0/24}]
"""


@pytest.fixture(scope="module")
def addr(dev_agent):
    return dev_agent.addr


@pytest.fixture(autouse=True)
def clean(addr):
    yield
    api = httpx.Client(base_url=f"http://{addr}")
    for i in api.get("/v1/connect/intentions").json():
        api.delete(f"/v1/connect/intentions/{i['ID']}")


def test_consul_spellings_run_as_typed(addr):
    r = tether("intention", "create", "-deny", "web", "db", addr=addr)
    assert r.returncode == 0 and r.stdout.strip() == "Created: web => db (deny)"
    assert tether("intention", "create", "--allow", "-description", "all", "*", "db", addr=addr).returncode == 0
    r = tether("intention", "check", "web", "db", addr=addr)
    assert (r.returncode, r.stdout.strip()) == (1, "Denied")
    r = tether("intention", "check", "api", "db", addr=addr)
    assert (r.returncode, r.stdout.strip()) == (0, "Allowed")
    r = tether("intention", "match", "-source", "web", addr=addr)
    assert r.stdout.splitlines() == ["web => db (deny)", "* => db (allow)"]
    r = tether("intention", "match", "--destination", "db", addr=addr)
    assert r.stdout.splitlines() == ["web => db (deny)", "* => db (allow)"]
    r = tether("intention", "get", "web", "db", addr=addr)
    assert r.returncode == 0 and "Action:         deny" in r.stdout
    r = tether("intention", "list", addr=addr)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3  # header + two intentions
    assert tether("intention", "delete", "web", "db", addr=addr).stdout.strip() == "Intention deleted."
    r = tether("intention", "get", "web", "db", addr=addr)
    assert r.returncode == 1 and "no intention web -> db" in r.stderr


def test_duplicate_without_replace_is_a_clear_error(addr):
    assert tether("intention", "create", "-allow", "web", "db", addr=addr).returncode == 0
    r = tether("intention", "create", "-deny", "web", "db", addr=addr)
    assert r.returncode == 2 and r.stderr.startswith("tether: an intention web -> db exists already (ID ")
    assert "use -replace" in r.stderr and len(r.stderr.splitlines()) == 1
    r = tether("intention", "create", "-replace", "-deny", "-meta", "owner=ops", "web", "db", addr=addr)
    assert r.returncode == 0
    assert tether("intention", "check", "web", "db", addr=addr).returncode == 1


@pytest.mark.parametrize("args, needle", [
    (("intention", "create", "-allow", "web_1", "db"), "'web_1'"),
    (("intention", "create", "-allow", "-deny", "web", "db"), "not both"),
    (("intention", "create", "-allow", "w*", "db"), "'*' may only stand alone"),
    (("intention", "create", "-meta", "novalue", "web", "db"), "KEY=VALUE"),
    (("intention", "check", "*", "db"), "SRC"),
    (("intention", "match", "web"), "exactly one of -source or -destination"),
    (("policy", "explain", "web", "db"), "DST:PORT"),
    (("policy", "explain", "web", "db:80", "-addr", "10.0.0.999"), "does not parse"),
    (("policy", "apply", "-f", "/nonexistent/policy.yaml"), "cannot read it"),
])
def test_bad_input_exits_2_with_one_line(addr, args, needle):
    r = tether(*args, addr=addr)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_check_explain_prints_the_deciding_rule_and_the_rest(addr):
    tether("intention", "create", "-deny", "*", "db", addr=addr)
    tether("intention", "create", "-allow", "web", "db", addr=addr)
    r = tether("intention", "check", "--explain", "api", "db", addr=addr)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0] == "Denied: api -> db"
    assert lines[1] == "Decided by: intention * -> db (deny, precedence 8)"
    assert any("no match  [intention] web -> db (allow, precedence 9): source api is not web" in line for line in lines)
    r = tether("intention", "check", "-explain", "web", "db", addr=addr)
    assert r.returncode == 0 and r.stdout.startswith("Allowed: web -> db")


def test_policy_apply_get_explain(addr, tmp_path):
    path = tmp_path / "db.yaml"
    path.write_text(POLICY)
    r = tether("policy", "apply", "-f", str(path), addr=addr)
    assert r.returncode == 0 and "server policy db-5432 (db:5432)" in r.stdout
    r = tether("policy", "get", "db", addr=addr)
    assert r.returncode == 0 and "name: db-5432" in r.stdout and "cidr: 192.0.2.0/24" in r.stdout
    r = tether("policy", "explain", "web", "db:5432", addr=addr)
    assert r.returncode == 0 and "Decided by: authorization app (web)" in r.stdout
    r = tether("policy", "explain", "api", "db:5432", addr=addr)
    assert r.returncode == 1 and "Decided by: default policy" in r.stdout
    r = tether("policy", "explain", "-", "db:5432", "--addr", "192.0.2.9", addr=addr)
    assert r.returncode == 0 and "authorization lb" in r.stdout
    r = tether("policy", "explain", "-", "db:5432", "-addr", "127.0.0.1", "-probe", addr=addr)
    assert r.returncode == 0 and "agent health probe" in r.stdout
    assert tether("policy", "delete", "db", "-port", "5432", addr=addr).returncode == 0
    r = tether("policy", "get", "db", addr=addr)
    assert "db has no server policy" in r.stdout and "kind: MeshPolicy" in r.stdout


def test_a_bad_multi_document_file_lists_every_problem_and_writes_nothing(addr):
    bad = POLICY + "---\napiVersion: tether.dev/v1\nkind: ServerPolicy\nspec: {service: api, colour: red}\n" \
        "---\napiVersion: tether.dev/v1\nkind: MeshPolicy\nspec: {defaultPolicy: allow-all}\n"
    r = tether("policy", "apply", "-f", "-", addr=addr, stdin=bad)
    assert r.returncode == 2
    assert "2 problem(s)" in r.stderr and "spec.colour: unknown field" in r.stderr and "'allow-all'" in r.stderr
    assert httpx.get(f"http://{addr}/v1/tether/policy/db").json() == []


def test_unknown_default_policy_name_is_refused():
    r = subprocess.run([sys.executable, "-m", "tether.cli.main", "agent", "-dev", "-default-policy", "maybe"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown default policy 'maybe'; use allow or deny" in r.stderr


def test_server_and_node_agent_pair(tmp_path):
    server = start_tether("server", "-data-dir", str(tmp_path / "server"))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "n1", "-no-managed-proxies")
    try:
        r = tether("intention", "check", "web", "db", addr=agent.addr)
        assert r.returncode == 1  # `tether server` starts with default intention deny
        assert tether("intention", "create", "-allow", "web", "db", addr=agent.addr).returncode == 0
        api = httpx.Client(base_url=agent.url, timeout=30)
        td = api.get("/v1/agent/connect/authz-snapshot").json()["TrustDomain"]
        body = {"Target": "db", "ClientCertURI": f"spiffe://{td}/ns/default/dc/dc1/svc/web"}
        deadline = time.monotonic() + 10
        while not api.post("/v1/agent/connect/authorize", json=body).json()["Authorized"]:
            assert time.monotonic() < deadline, "the agent never saw the server's write"
            time.sleep(0.01)
        assert tether("intention", "check", "--explain", "web", "db", addr=agent.addr).returncode == 0
    finally:
        agent.stop()
        server.stop()


def test_check_answers_what_the_sidecar_would_server_policy_included(addr, tmp_path):
    policy = tmp_path / "db.yaml"
    policy.write_text(POLICY)
    assert tether("policy", "apply", "-f", str(policy), addr=addr).returncode == 0
    try:
        assert tether("intention", "create", "-deny", "web", "db", addr=addr).returncode == 0
        # On port 5432 the server policy decides (its authorization admits web), not the intention ...
        r = tether("intention", "check", "-port", "5432", "web", "db", addr=addr)
        assert r.returncode == 0 and r.stdout.splitlines()[0] == "Allowed", r.stdout
        assert "authorization app" in r.stdout and "tether policy explain" in r.stdout
        r = tether("intention", "check", "-port", "5432", "api", "db", addr=addr)
        assert r.returncode == 1 and r.stdout.splitlines()[0] == "Denied"  # the policy's default: deny
        # ... on any other port the intention does, as in Consul.
        r = tether("intention", "check", "web", "db", addr=addr)
        assert (r.returncode, r.stdout.strip()) == (1, "Denied")
        r = tether("intention", "check", "-explain", "-port", "5432", "web", "db", addr=addr)
        assert r.returncode == 0 and "Decided by: authorization" in r.stdout
    finally:
        httpx.delete(f"http://{addr}/v1/tether/policy/db")
