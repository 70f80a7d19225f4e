"""Identity needs service:write (issue 9's "Done means"): the theft of a service's identity,
reproduced with `default_policy = deny`, fails; real web -> db sidecars, running with their
registration tokens, keep serving throughout.

A `tether agent -dev` subprocess with a Consul-shaped config file; managed sidecars (real
processes, real mutual TLS); the attacker is a local process without a token.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from proxy_kit import EchoServer, Mesh, roundtrip, wait_for
from tether.testing.agent import start_tether

MANAGEMENT = "11111111-2222-3333-4444-555555555555"
CONFIG = f'''
acl {{
  enabled        = true
  default_policy = "deny"
  tokens {{
    initial_management = "{MANAGEMENT}"
  }}
}}
'''


def token_for(api: httpx.Client, service: str) -> str:
    r = api.put("/v1/acl/token", json={"Description": f"{service}'s token",
                                       "ServiceIdentities": [{"ServiceName": service}]})
    r.raise_for_status()
    return r.json()["SecretID"]


def register(api: httpx.Client, token: str, name: str, port: int, upstreams: list[dict] | None = None) -> int:
    """Register with a sidecar on a port the agent chooses; returns that port."""
    body = {"name": name, "port": port, "connect": {"sidecar_service": {"proxy": {"upstreams": upstreams or []}}}}
    r = api.put("/v1/agent/service/register", json=body, headers={"X-Consul-Token": token})
    assert r.status_code == 200, r.text
    return api.get(f"/v1/agent/service/{name}-sidecar-proxy").json()["Port"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    path = tmp_path_factory.mktemp("acl") / "acl.hcl"
    path.write_text(CONFIG)
    path.chmod(0o600)
    agent = start_tether("agent", "-dev", "-node", "node1", "-config-file", str(path))
    m = Mesh(agent, httpx.Client(base_url=agent.url, timeout=30, headers={"X-Consul-Token": MANAGEMENT}))
    yield m
    m.close()


@pytest.fixture(scope="module")
def web_db(mesh):
    """web -> db through managed sidecars, each registered with its own service-identity token."""
    db = mesh.app(b"db")
    web_token, db_token = token_for(mesh.api, "web"), token_for(mesh.api, "db")
    mesh.db_sidecar = register(mesh.api, db_token, "db", db.port)
    mesh.db_port = db.port
    upstream = mesh.port()
    register(mesh.api, web_token, "web", 1, [{"destination_name": "db", "local_bind_port": upstream}])
    mesh.intention("web", "db", "allow")  # default deny: nothing flows without it
    mesh.healthy("db")
    wait_for("web -> db through the sidecars", lambda: roundtrip(upstream, b"ok", greeting=True) == b"db\nok")
    return upstream, web_token, db_token


def traffic_flows(upstream: int, count: int = 10) -> bool:
    return all(roundtrip(upstream, b"x%d" % i, greeting=True) == b"db\nx%d" % i for i in range(count))


def test_managed_sidecars_serve_with_their_registration_tokens(mesh, web_db):
    upstream, _, _ = web_db
    assert traffic_flows(upstream, 20)


@pytest.mark.parametrize("method,path,kwargs,permission", [
    ("GET", "/v1/agent/connect/ca/leaf/db", {}, "service:write' on \"db\""),
    ("GET", "/v1/agent/connect/ca/leaf/admin", {}, "service:write' on \"admin\""),
    ("PUT", "/v1/agent/service/register", {"json": {"Name": "db", "Port": 9}}, "service:write' on \"db\""),
    ("PUT", "/v1/connect/intentions/exact", {"params": {"source": "*", "destination": "db"},
                                              "json": {"Action": "deny"}}, "intentions:write' on \"db\""),
    ("PUT", "/v1/connect/ca/configuration", {"json": {"Config": {"LeafCertTTL": "1h"}}}, "operator:write'"),
    ("PUT", "/v1/kv/db/password", {"content": b"stolen"}, "key:write' on \"db/password\""),
    ("PUT", "/v1/catalog/register", {"json": {"Node": "evil", "Address": "192.0.2.66",
                                              "Service": {"Service": "db", "Port": 5432}}}, "node:write' on \"evil\""),
    ("PUT", "/v1/internal/tether/heartbeat/node1", {}, "node:write' on \"node1\""),
    ("POST", "/v1/connect/ca/sign", {"json": {"CSR": "x", "Service": "db"}}, "service:write' on \"db\""),
])
def test_anonymous_callers_cannot_take_an_identity_or_change_the_mesh(mesh, web_db, method, path, kwargs,
                                                                      permission):
    upstream, _, _ = web_db
    r = httpx.request(method, mesh.agent.url + path, timeout=10, **kwargs)
    assert r.status_code == 403, r.text
    assert "Permission denied: anonymous token lacks permission '" + permission in r.text
    assert traffic_flows(upstream)


def test_an_unregistered_proxy_without_a_token_gets_no_identity(mesh, web_db):
    upstream, _, _ = web_db
    app = EchoServer(b"evil")
    try:
        listen = mesh.port()
        proc = subprocess.run(
            [sys.executable, "-m", "tether.cli.main", "connect", "proxy", "-service", "db", "-register",
             "-listen", f"127.0.0.1:{listen}", "-service-addr", f"127.0.0.1:{app.port}",
             "-http-addr", mesh.agent.addr], capture_output=True, text=True, timeout=60,
            env={k: v for k, v in __import__("os").environ.items() if "TOKEN" not in k})
    finally:
        app.close()
    assert proc.returncode == 2, proc.stderr
    assert "lacks permission 'service:write' on \"db\"" in proc.stderr
    assert len(mesh.api.get("/v1/health/connect/db").json()) == 1  # only the real db sidecar
    assert traffic_flows(upstream, 20)  # every connection still reaches the real db


def test_a_service_token_gets_its_own_leaf_and_no_other(mesh, web_db):
    upstream, web_token, _ = web_db
    as_web = {"X-Consul-Token": web_token}
    r = httpx.get(mesh.agent.url + "/v1/agent/connect/ca/leaf/web", headers=as_web, timeout=10)
    assert r.status_code == 200 and r.json()["ServiceURI"].endswith("/svc/web")
    assert httpx.get(mesh.agent.url + "/v1/agent/connect/ca/leaf/web-sidecar-proxy", headers=as_web,
                     timeout=10).status_code == 200
    r = httpx.get(mesh.agent.url + "/v1/agent/connect/ca/leaf/db", headers=as_web, timeout=10)
    assert r.status_code == 403 and "token with AccessorID '" in r.text and "'service:write' on \"db\"" in r.text
    r = httpx.put(mesh.agent.url + "/v1/agent/service/register", json={"Name": "db", "Port": 9}, headers=as_web,
                  timeout=10)
    assert r.status_code == 403
    assert traffic_flows(upstream)


def test_the_cli_refuses_with_exit_2_naming_the_permission(mesh, web_db):
    env = {k: v for k, v in __import__("os").environ.items() if "TOKEN" not in k}
    proc = subprocess.run([sys.executable, "-m", "tether.cli.main", "kv", "put", "db/password", "x",
                           "-http-addr", mesh.agent.addr], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "lacks permission 'key:write' on \"db/password\"" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "tether.cli.main", "kv", "put", "db/password", "x",
                           "-http-addr", mesh.agent.addr], capture_output=True, text=True, timeout=60,
                          env={**env, "CONSUL_HTTP_TOKEN": MANAGEMENT})
    assert proc.returncode == 0, proc.stderr


def refused(upstream: int) -> bool:
    return roundtrip(upstream, b"x", greeting=True) == b""


def test_a_new_registration_token_reaches_the_running_sidecar_without_a_restart(mesh, web_db):
    upstream, _, db_token = web_db
    before = [line for line in mesh.agent.log if "READY" in line and "service=db" in line]
    new_token = token_for(mesh.api, "db")
    assert register(mesh.api, new_token, "db", mesh.db_port) == mesh.db_sidecar  # the same sidecar, same port
    old = next(t for t in mesh.api.get("/v1/acl/tokens").json() if t.get("ServiceIdentities") ==
               [{"ServiceName": "db"}] and t["AccessorID"] and
               mesh.api.get(f"/v1/acl/token/{t['AccessorID']}").json()["SecretID"] == db_token)
    mesh.api.delete(f"/v1/acl/token/{old['AccessorID']}").raise_for_status()
    # db's sidecar still follows policy (its watches now act with the new token): a deny
    # reaches it, and so does the allow after it.
    mesh.intention("web", "db", "deny")
    wait_for("db's sidecar to apply the deny", lambda: refused(upstream))
    mesh.intention("web", "db", "allow")
    wait_for("db's sidecar to apply the allow", lambda: traffic_flows(upstream, 3))
    after = [line for line in mesh.agent.log if "READY" in line and "service=db" in line]
    assert after == before  # the same process: no restart
