"""The sidecar's pure parts, without processes: registration -> plan, flags -> options,
the pydantic-free policy reader (held equal to core.policy_yaml.snapshot_from_state),
the per-connection authorizer, and the proxy process's import graph (it must stay lean)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cli.proxy_cmds import build_parser, options_from
from tether.core.authz import Source, decide
from tether.core.errors import InvalidInput
from tether.core.policy_yaml import snapshot_from_state
from tether.core.spiffe import parse_spiffe_id
from tether.proxy.agentclient import _parse_reply, parse_addr
from tether.proxy.sidecar_config import (
    SnapshotAuthorizer, instances_from_health, plan_for_service, plan_from_registration,
)
from tether.core.policy_state import snapshot_from_agent_state

TD = "11111111-2222-3333-4444-555555555555.tether"


def registration(**proxy) -> dict:
    base = {"DestinationServiceName": "web", "DestinationServiceID": "web", "LocalServiceAddress": "127.0.0.1",
            "LocalServicePort": 8080, "Config": {}, "Upstreams": [], "Mode": "direct"}
    return {"ID": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000, "Datacenter": "dc1",
            "Proxy": {**base, **proxy}}


def test_a_registration_becomes_listeners():
    plan = plan_from_registration(registration(
        Config={"bind_address": "127.0.0.2", "local_connect_timeout_ms": 250, "handshake_timeout_ms": 2000,
                "admin_bind": "127.0.0.1:19000", "max_pending_handshakes": 64},
        Upstreams=[{"DestinationName": "db", "LocalBindPort": 9191, "Config": {"lb_policy": "least_conn",
                                                                               "connect_timeout_ms": 1500}},
                   {"DestinationName": "api", "LocalBindPort": 9292, "LocalBindAddress": "127.0.0.5",
                    "Datacenter": "dc2"}]))
    assert plan.service == "web"
    assert (plan.inbound.bind_host, plan.inbound.bind_port) == ("127.0.0.2", 21000)
    assert (plan.inbound.local_app_host, plan.inbound.local_app_port) == ("127.0.0.1", 8080)
    assert plan.inbound.connect_timeout == 0.25 and plan.handshake_timeout == 2.0
    assert plan.inbound.max_pending_handshakes == 64
    assert plan_from_registration(registration()).inbound.max_pending_handshakes == 1024
    assert plan.admin_bind == ("127.0.0.1", 19000)
    db, api = plan.upstreams
    assert (db.name, db.bind_host, db.bind_port, db.policy, db.connect_timeout) == ("db", "127.0.0.1", 9191, "least_conn", 1.5)
    assert (api.bind_host, api.datacenter) == ("127.0.0.5", "dc2")
    # the flag wins over Proxy.Config, and a plan compares equal when nothing must reopen
    assert plan_from_registration(registration(), admin_bind=("127.0.0.1", 1)).admin_bind == ("127.0.0.1", 1)
    assert plan_from_registration(registration()) == plan_from_registration(registration())


def test_every_problem_in_a_registration_is_reported_at_once():
    with pytest.raises(InvalidInput) as e:
        plan_from_registration(registration(
            Config={"handshake_timeout_ms": -1, "admin_bind": "nowhere", "max_pending_handshakes": 0},
            Upstreams=[{"DestinationName": "db", "LocalBindPort": 0},
                       {"DestinationName": "q", "LocalBindPort": 1, "DestinationType": "prepared_query"},
                       {"DestinationName": "x", "LocalBindPort": 9, "Config": {"lb_policy": "random"}}]))
    msg = str(e.value)
    for part in ("handshake_timeout_ms", "admin_bind", "Upstreams[0].LocalBindPort", "prepared_query", "lb_policy",
                 "Proxy.Config.max_pending_handshakes: 0 must be a whole number, at least 1"):
        assert part in msg
    with pytest.raises(InvalidInput, match="not a connect-proxy"):
        plan_from_registration({"ID": "web", "Kind": ""})


def test_unregistered_proxy_flags():
    plan = plan_for_service("mitchellh", ["postgresql:9191"])
    assert plan.inbound is None and plan.upstreams[0].bind_port == 9191
    plan = plan_for_service("web", listen=":8443", service_addr="127.0.0.1:8080")
    assert (plan.inbound.bind_host, plan.inbound.bind_port, plan.inbound.local_app_port) == ("0.0.0.0", 8443, 8080)
    with pytest.raises(InvalidInput, match="go together"):
        plan_for_service("web", listen=":8443")
    with pytest.raises(InvalidInput, match="NAME:PORT"):
        plan_for_service("web", ["db"])
    with pytest.raises(InvalidInput, match="listed twice"):
        plan_for_service("web", ["db:1", "db:2"])


def _opts(argv: list[str], env: dict[str, str]):
    return options_from(build_parser().parse_args(argv), env)


def test_flags_and_the_supervisor_environment(capsys):
    env = {"CONNECT_PROXY_ID": "web-sidecar-proxy", "CONNECT_SIDECAR_FOR": "web", "TETHER_HTTP_ADDR": "127.0.0.1:9"}
    o = _opts([], env)
    assert (o.proxy_id, o.sidecar_for, o.agent_addr) == ("web-sidecar-proxy", "", "127.0.0.1:9")
    o = _opts(["-sidecar-for", "db", "--http-addr", "127.0.0.1:7"], env)  # a flag beats the environment
    assert (o.proxy_id, o.sidecar_for, o.agent_addr) == ("", "db", "127.0.0.1:7")
    o = _opts(["-service", "m", "-upstream", "pg:9191", "-upstream", "r:6379", "-admin-bind", ":0"], {})
    assert o.upstreams == ("pg:9191", "r:6379") and o.admin_bind == ("127.0.0.1", 0)
    with pytest.raises(InvalidInput, match="exclude each other"):
        _opts(["-service", "a", "-proxy-id", "b"], {})
    with pytest.raises(InvalidInput, match="are for -service"):
        _opts(["-sidecar-for", "a", "-upstream", "db:1"], {})
    with pytest.raises(InvalidInput, match="say which proxy"):
        _opts([], {})
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["-log-format", "xml"])
    assert exited.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err


def _intention(src: str, dst: str, action: str, n: int) -> dict:
    return {"ID": f"00000000-0000-0000-0000-{n:012d}", "SourceName": src, "DestinationName": dst,
            "Action": action, "SourceType": "consul", "Precedence": 9, "CreateIndex": n, "ModifyIndex": n}


STATE = {
    "Index": 7,
    "Intentions": [_intention("web", "db", "allow", 1), _intention("*", "db", "deny", 2),
                   _intention("batch", "*", "allow", 3)],
    "Policies": [
        {"apiVersion": "tether.dev/v1", "kind": "ServerPolicy", "metadata": {"name": "db-5432"},
         "spec": {"service": "db", "port": 5432, "defaultPolicy": "deny", "authorizations": [
             {"name": "app", "identities": ["web", "batch"]},
             {"name": "ops", "unauthenticated": True, "networks": [{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}]}]}},
        {"apiVersion": "tether.dev/v1", "kind": "ServerPolicy", "metadata": {"name": "api"},
         "spec": {"service": "api", "defaultPolicy": "all-authenticated", "authorizations": []}},
    ],
    "Mesh": {"apiVersion": "tether.dev/v1", "kind": "MeshPolicy", "metadata": {"name": "mesh"},
             "spec": {"defaultPolicy": "all-unauthenticated", "defaultIntention": "deny",
                      "clusterNetworks": [{"cidr": "192.0.2.0/24"}], "probeNetworks": [{"cidr": "127.0.0.0/8"}]}},
}

_callers = st.sampled_from([None, "web", "batch", "db", "api", "evil"])
_ips = st.sampled_from(["127.0.0.1", "10.1.2.3", "10.9.1.1", "192.0.2.9", "198.51.100.1"])


@settings(max_examples=200, deadline=None)
@given(caller=_callers, ip=_ips, dst=st.sampled_from(["db", "api", "web"]), port=st.sampled_from([None, 5432, 80]),
       probe=st.booleans())
def test_the_light_reader_decides_exactly_like_the_full_parser(caller, ip, dst, port, probe):
    light, full = snapshot_from_agent_state(STATE, TD), snapshot_from_state(STATE, TD)
    ident = parse_spiffe_id(f"spiffe://{TD}/ns/default/dc/dc1/svc/{caller}") if caller else None
    src = Source(ident, ip, probe)
    a, b = decide(light, src, dst, port), decide(full, src, dst, port)
    assert (a.allowed, a.audit, a.reason) == (b.allowed, b.audit, b.reason)


def test_the_light_reader_falls_back_and_fails_like_the_full_parser():
    odd = {**STATE, "Policies": [{**STATE["Policies"][1], "metadata": {"name": "api", "labels": {"a": "b"}}}]}
    assert snapshot_from_agent_state(odd, TD).server_policy("api", None).name == "api"  # via the full parser
    bad = {**STATE, "Intentions": [{"SourceName": "web", "DestinationName": "db", "Action": "maybe"}]}
    with pytest.raises(InvalidInput) as light:
        snapshot_from_agent_state(bad, TD)
    with pytest.raises(InvalidInput) as full:
        snapshot_from_state(bad, TD)
    assert "maybe" in str(light.value) and "maybe" in str(full.value)


def test_the_authorizer_uses_the_app_port_and_treats_odd_uris_as_unauthenticated():
    snap = snapshot_from_agent_state(STATE, TD)
    at_db = SnapshotAuthorizer(snap, "db", 5432)
    assert at_db(f"spiffe://{TD}/ns/default/dc/dc1/svc/web", "192.0.2.1", 21000).allowed  # authorization `app`
    assert not at_db(f"spiffe://{TD}/ns/default/dc/dc1/svc/evil", "192.0.2.1", 21000).allowed
    assert at_db(None, "10.1.2.3", 21000).allowed  # `ops`: unauthenticated from 10/8
    assert not at_db("spiffe://elsewhere/not-a-service", "10.9.0.1", 21000).allowed
    # the port decides which policy applies: batch is authorized on db:5432, but on the
    # service as a whole the intention `* -> db` (deny) outranks `batch -> *` (allow)
    batch = f"spiffe://{TD}/ns/default/dc/dc1/svc/batch"
    assert at_db(batch, "192.0.2.1", 21000).allowed
    assert not SnapshotAuthorizer(snap, "db", None)(batch, "192.0.2.1", 21000).allowed


def test_health_entries_become_instances():
    entries = [{"Node": {"Address": "192.0.2.1"}, "Service": {"Address": "", "Port": 21000}},
               {"Node": {"Address": "192.0.2.1"}, "Service": {"Address": "192.0.2.7", "Port": 21001}},
               {"Node": {"Address": ""}, "Service": {"Address": "", "Port": 1}}]
    assert [(i.host, i.port) for i in instances_from_health(entries)] == [("192.0.2.1", 21000), ("192.0.2.7", 21001)]


def test_agent_client_parsing():
    assert parse_addr("http://127.0.0.1:8500") == ("127.0.0.1", 8500)
    assert parse_addr("[::1]:8500") == ("::1", 8500)
    with pytest.raises(InvalidInput):
        parse_addr("localhost")
    reply = _parse_reply(b"HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n", "GET /x", "a")
    assert reply.body == {"a": 1} and reply.index == 42


def test_the_proxy_process_loads_no_web_framework():
    code = ("import sys, tether.cli.proxy_cmds, tether.proxy.sidecar, uvloop; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'fastapi', 'httpx', 'typer', 'rich', 'yaml'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_a_mode_hook_runs_for_transparent_registrations(api):
    from tether.proxy.sidecar import Sidecar, SidecarOptions

    await api.put("/v1/agent/service/register", json={"name": "tp", "port": 1, "connect": {"sidecar_service": {
        "proxy": {"mode": "transparent", "upstreams": []}}}})
    seen = []

    async def hook(sidecar, plan):
        seen.append((plan.mode, plan.service, sidecar.trust_domain.endswith(".tether")))

    sidecar = Sidecar(SidecarOptions(agent_addr=str(api.base_url), sidecar_for="tp", access_log=None),
                      mode_hooks={"transparent": hook})
    await sidecar.start()
    try:
        assert seen == [("transparent", "tp", True)]
        assert sidecar.ready_line().startswith("READY inbound=")
    finally:
        await sidecar.stop(0)
