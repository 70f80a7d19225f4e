"""The authorization state a proxy decides on is never filtered: whole, scoped to one
destination, or a 403.

A state with some intentions hidden is a different policy. Before this rule, a sidecar whose
token could read only some destinations received the state without the others' intentions
and denied what they allowed (and would have allowed what a hidden deny refused).
"""

from __future__ import annotations

import pytest

from tether.core.authz import Source, decide
from tether.core.policy_yaml import snapshot_from_state
from tether.core.spiffe import SpiffeId

from acl_kit import as_token, make_token

SNAPSHOT = "/v1/agent/connect/authz-snapshot"
SERVER_STATE = "/v1/internal/tether/authz"


@pytest.fixture
async def intentions(admin):
    """web -> db allowed, * -> db denied below it, cache -> web allowed, * -> * deny."""
    for source, destination, action in (("web", "db", "allow"), ("*", "db", "deny"),
                                        ("cache", "web", "allow"), ("*", "*", "deny")):
        r = await admin.put("/v1/connect/intentions/exact", params={"source": source, "destination": destination},
                            json={"Action": action})
        assert r.status_code == 200, r.text


async def db_writer(admin) -> str:
    """A token that may register db and nothing more (no service_prefix read, unlike a
    service identity, which reads every service and so every intention)."""
    r = await admin.put("/v1/acl/policy", json={"Name": "db-only", "Rules": 'service "db" { policy = "write" }'})
    assert r.status_code == 200, r.text
    return await make_token(admin, Policies=[{"Name": "db-only"}])


def allowed(state: dict, source: str, destination: str) -> bool:
    snap = snapshot_from_state(state, state["TrustDomain"])
    return decide(snap, Source(SpiffeId(snap.trust_domain, "default", "dc1", source)), destination, None).allowed


@pytest.mark.parametrize("path", [SNAPSHOT, SERVER_STATE])
async def test_a_token_without_read_on_everything_gets_403_not_a_smaller_policy(acl_url, admin, anon, intentions,
                                                                               path):
    r = await anon.get(path)
    assert r.status_code == 403, r.text
    assert "intentions:read" in r.text
    assert "X-Consul-Results-Filtered-By-ACLs" not in r.headers
    async with as_token(acl_url, await db_writer(admin)) as client:
        r = await client.get(path)
    assert r.status_code == 403, r.text  # db's rules are its to read, web's are not


@pytest.mark.parametrize("path", [SNAPSHOT, SERVER_STATE])
async def test_the_sidecar_of_a_service_gets_every_rule_about_it(acl_url, admin, intentions, path):
    """db's registration token (service:write on db, nothing else) asks ?service=db and gets
    the intentions to db and to `*`: the same decisions as the whole state."""
    whole = (await admin.get(path)).json()
    async with as_token(acl_url, await db_writer(admin)) as client:
        r = await client.get(path, params={"service": "db"})
        assert r.status_code == 200, r.text
        scoped = r.json()
        assert "X-Consul-Results-Filtered-By-ACLs" not in r.headers
        assert {i["DestinationName"] for i in scoped["Intentions"]} == {"db", "*"}
        for source in ("web", "cache", "other"):
            assert allowed(scoped, source, "db") == allowed(whole, source, "db"), source
        assert allowed(scoped, "web", "db") and not allowed(scoped, "other", "db")
        r = await client.get(path, params={"service": "web"})  # not db's to see
    assert r.status_code == 403, r.text
    assert 'intentions:read\' on "web"' in r.text


async def test_an_intentions_reader_gets_the_scoped_state(acl_url, admin, intentions):
    r = await admin.put("/v1/acl/policy", json={"Name": "read-db-intentions",
                                                "Rules": 'service "db" { policy = "deny" intentions = "read" }'})
    assert r.status_code == 200, r.text
    reader = await make_token(admin, Policies=[{"Name": "read-db-intentions"}])
    async with as_token(acl_url, reader) as client:
        r = await client.get(SNAPSHOT, params={"service": "db"})
        assert r.status_code == 200, r.text
        assert allowed(r.json(), "web", "db")
        r = await client.get(SNAPSHOT, params={"service": "not a name"})
    assert r.status_code == 400, r.text
