"""The ACLs of sessions, KV locks, txn, events and maintenance, as Consul checks them, with real tokens."""

from __future__ import annotations

from acl_kit import as_token, make_token


async def policy_token(admin, name: str, rules: str) -> str:
    r = await admin.put("/v1/acl/policy", json={"Name": name, "Rules": rules})
    assert r.status_code == 200, r.text
    return await make_token(admin, Policies=[{"ID": r.json()["ID"]}])


async def test_session_write_is_on_the_node_and_lists_are_filtered(acl_url, admin):
    writer = await policy_token(admin, "s-n1", 'session "n1" { policy = "write" }\nkey_prefix "locks/" '
                                               '{ policy = "write" }\nnode_prefix "" { policy = "read" }')
    reader = await policy_token(admin, "s-none", 'key_prefix "" { policy = "read" }')
    async with as_token(acl_url, writer) as w, as_token(acl_url, reader) as r:
        created = await w.put("/v1/session/create", json={"Node": "n1", "LockDelay": "0s"})
        assert created.status_code == 200, created.text
        sid = created.json()["ID"]
        other = await w.put("/v1/session/create", json={"Node": "n2"})
        assert other.status_code == 403 and "session:write" in other.text and '"n2"' in other.text
        assert (await w.put("/v1/kv/locks/a", params={"acquire": sid}, content=b"x")).json() is True
        refused = await w.put("/v1/kv/other/a", params={"acquire": sid}, content=b"x")
        assert refused.status_code == 403 and "key:write" in refused.text  # acquire needs key:write
        listed = await r.get("/v1/session/list")
        assert listed.json() == [] and listed.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert (await r.put(f"/v1/session/destroy/{sid}")).status_code == 403
        assert (await r.put(f"/v1/session/renew/{sid}")).status_code == 403
        assert (await w.put(f"/v1/session/destroy/{sid}")).json() is True


async def test_txn_checks_each_operation_and_events_their_name(acl_url, admin):
    token = await policy_token(admin, "t", 'key_prefix "app/" { policy = "write" }\nkey_prefix "ro/" '
                                           '{ policy = "read" }\nevent "deploy" { policy = "write" }')
    async with as_token(acl_url, token) as t:
        ok = await t.put("/v1/txn", json=[{"KV": {"Verb": "set", "Key": "app/x", "Value": "eA=="}},
                                          {"KV": {"Verb": "check-not-exists", "Key": "ro/y"}}])
        assert ok.status_code == 200, ok.text
        denied = await t.put("/v1/txn", json=[{"KV": {"Verb": "set", "Key": "app/y", "Value": "eA=="}},
                                              {"KV": {"Verb": "set", "Key": "ro/y", "Value": "eA=="}}])
        assert denied.status_code == 403 and '"ro/y"' in denied.text
        assert (await admin.get("/v1/kv/app/y")).status_code == 404  # nothing of the refused txn was written
        node = await t.put("/v1/txn", json=[{"Node": {"Verb": "set", "Node": {"Node": "n7", "Address": "192.0.2.7"}}}])
        assert node.status_code == 403 and "node:write" in node.text
        assert (await t.put("/v1/event/fire/deploy")).status_code == 200
        assert (await t.put("/v1/event/fire/other")).status_code == 403
        await admin.put("/v1/event/fire/secret")
        listed = await t.get("/v1/event/list")
        assert [e["Name"] for e in listed.json()] == ["deploy"]  # write implies read; "secret" is filtered
        assert listed.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"


async def test_maintenance_needs_node_or_service_write(acl_url, admin, anon):
    await admin.put("/v1/agent/service/register", json={"Name": "web", "Port": 80})
    ops = await policy_token(admin, "m", 'service "web" { policy = "write" }')
    async with as_token(acl_url, ops) as m:
        assert (await m.put("/v1/agent/service/maintenance/web", params={"enable": "true"})).status_code == 200
        node = await m.put("/v1/agent/maintenance", params={"enable": "true"})
        assert node.status_code == 403 and "node:write" in node.text
    assert (await admin.put("/v1/agent/maintenance", params={"enable": "true"})).status_code == 200
    assert (await anon.put("/v1/agent/reload")).status_code == 403
    assert (await anon.get("/v1/agent/metrics")).status_code == 403
