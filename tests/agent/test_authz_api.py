"""POST /v1/agent/connect/authorize: Consul's shape and errors, Tether's Port/ClientAddr/Probe
fields, and the probe rule (the agent's own health checks pass under a deny-everything policy)."""

from __future__ import annotations

import httpx
import pytest

from tether.core.authz import Source, decide
from tether.core.policy_yaml import snapshot_from_state
from tether.testing.agent import serve_in_process

AUTHORIZE = "/v1/agent/connect/authorize"
# Everything closed: mesh default policy deny, default intention deny, and a port policy that
# only lets `web` in. Nothing here mentions probes: the probe rule needs no configuration.
LOCKED_DOWN = """\
apiVersion: tether.dev/v1
kind: MeshPolicy
spec: {defaultPolicy: deny, defaultIntention: deny}
---
apiVersion: tether.dev/v1
kind: ServerPolicy
spec:
  service: db
  port: 5432
  authorizations:
    - {name: app, identities: [web]}
"""


@pytest.fixture
async def api():
    async with serve_in_process("dev", node="n1") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            r = await client.put("/v1/tether/policy", content=LOCKED_DOWN.encode())
            assert r.status_code == 200, r.text
            client.trust_domain = (await synced(client))["TrustDomain"]  # type: ignore[attr-defined]
            yield client


async def synced(api) -> dict:
    """Block until the agent's cache has caught up with the server's authorization state."""
    target = int((await api.get("/v1/internal/tether/authz")).headers["X-Consul-Index"])
    index = 0
    for _ in range(100):  # bounded: each round is one blocking query that returns on a change
        r = await api.get("/v1/agent/connect/authz-snapshot", params={"index": index, "wait": "5s"})
        index = int(r.headers["X-Consul-Index"])
        if index >= target:
            return r.json()
    raise AssertionError(f"the agent never reached index {target}")


def uri(api, service: str, trust_domain: str | None = None) -> str:
    return f"spiffe://{trust_domain or api.trust_domain}/ns/default/dc/dc1/svc/{service}"


async def authorize(api, **body):
    r = await api.post(AUTHORIZE, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_authorize_answers_from_the_agent_cache(api):
    ok = await authorize(api, Target="db", ClientCertURI=uri(api, "web"), ClientCertSerial="04:00:94", Port=5432)
    assert ok == {"Authorized": True, "Reason": "authorization app of server policy db-5432 (db:5432)"}
    no = await authorize(api, Target="db", ClientCertURI=uri(api, "api"), ClientCertSerial="04", Port=5432)
    assert no["Authorized"] is False and "db-5432" in no["Reason"]
    # Without a port (Consul's request shape) the mesh default policy applies: deny.
    no = await authorize(api, Target="db", ClientCertURI=uri(api, "web"), ClientCertSerial="04")
    assert no == {"Authorized": False, "Reason": "the mesh default policy is deny and no authorization matched"}


async def test_the_agents_probes_pass_a_deny_everything_policy(api):
    # From loopback, flagged by the proxy as the agent's own health check: allowed.
    probe = await authorize(api, Target="db", ClientAddr="127.0.0.1", Probe=True, Port=5432)
    assert probe == {"Authorized": True, "Reason": "agent health probe from a probe network is always allowed"}
    assert (await authorize(api, Target="db", ClientAddr="::1", Probe=True, Port=9999))["Authorized"]
    # The same caller without the flag, or the flag from outside loopback: denied.
    assert not (await authorize(api, Target="db", ClientAddr="127.0.0.1", Port=5432))["Authorized"]
    assert not (await authorize(api, Target="db", ClientAddr="192.0.2.7", Probe=True, Port=5432))["Authorized"]
    # The same answers from decide on a snapshot built from the agent's state (what the proxy runs).
    state = (await api.get("/v1/agent/connect/authz-snapshot")).json()
    snap = snapshot_from_state(state, state["TrustDomain"])
    assert decide(snap, Source(None, "127.0.0.1", probe=True), "db", 5432).allowed
    assert not decide(snap, Source(None, "192.0.2.7", probe=True), "db", 5432).allowed
    assert not decide(snap, Source(None, "127.0.0.1"), "db", 5432).allowed


@pytest.mark.parametrize("body, needle", [
    ({"ClientCertURI": "spiffe://x.tether/ns/default/dc/dc1/svc/web"}, "Target service must be specified"),
    ({"Target": "db", "ClientCertURI": "http://web"}, "ClientCertURI not a valid Connect identifier"),
    ({"Target": "db", "ClientCertURI": "spiffe://x.tether"}, "ClientCertURI not a valid Service identifier"),
    ({"Target": "db"}, "ClientCertURI not a valid Connect identifier"),
    ({"Target": "d b", "ClientCertURI": "spiffe://x.tether/ns/default/dc/dc1/svc/web"}, "Target: service name 'd b'"),
    ({"Target": "db", "ClientAddr": "300.1.1.1"}, "'300.1.1.1' does not parse"),
    ({"Target": "db", "ClientAddr": "127.0.0.1", "Port": 70000}, "Port: 70000"),
    ({"Target": "db", "ClientAddr": "127.0.0.1", "Colour": "red"}, "unknown field 'Colour'"),
])
async def test_bad_authorize_requests(api, body, needle):
    r = await api.post(AUTHORIZE, json=body)
    assert r.status_code == 400 and needle in r.text, r.text


async def test_a_caller_from_another_trust_domain_matches_no_intention(api):
    await api.put("/v1/tether/mesh", json={"defaultPolicy": "all-authenticated"})
    r = await api.put("/v1/connect/intentions/exact", params={"source": "*", "destination": "cache"},
                      json={"Action": "allow"})
    assert r.status_code == 200
    await synced(api)
    local = await authorize(api, Target="cache", ClientCertURI=uri(api, "web"))
    foreign = await authorize(api, Target="cache", ClientCertURI=uri(api, "web", "other.tether"))
    assert local["Authorized"] and not foreign["Authorized"]
    assert "no service identity in this mesh" in foreign["Reason"]
