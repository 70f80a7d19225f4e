"""The ACL HTTP API over a real socket: Consul's shapes, status codes and error bodies."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx

from tether.core.agent_config import AclConfig
from tether.testing.agent import serve_in_process

from acl_kit import MANAGEMENT, as_token, make_token

KV_WRITE = 'key_prefix "app/" { policy = "write" }'


async def test_bootstrap_once_then_403_with_the_reset_index():
    async with serve_in_process("dev", node="n1", acl=AclConfig(enabled=True, default_policy="deny")) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            first = await api.put("/v1/acl/bootstrap")
            assert first.status_code == 200, first.text
            token = first.json()
            assert token["Policies"] == [{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}]
            assert token["Description"] == "Bootstrap Token (Global Management)"
            second = await api.put("/v1/acl/bootstrap")
            assert second.status_code == 403
            assert second.text.startswith("Permission denied: ACL bootstrap no longer allowed (reset index: ")
            # the bootstrap token works; nothing was created by the refused attempt
            tokens = await api.get("/v1/acl/tokens", headers={"X-Consul-Token": token["SecretID"]})
            assert sorted(t["Description"] for t in tokens.json()) == ["Anonymous Token",
                                                                       "Bootstrap Token (Global Management)"]


async def test_acl_routes_answer_401_when_acls_are_off(api):
    r = await api.put("/v1/acl/bootstrap")
    assert (r.status_code, r.text) == (401, "ACL support disabled")
    assert (await api.get("/v1/acl/policies")).status_code == 401


async def test_token_lifecycle_in_consuls_shapes(admin):
    r = await admin.put("/v1/acl/policy", json={"Name": "app-kv", "Rules": KV_WRITE, "Description": "app keys"})
    assert r.status_code == 200, r.text
    policy = r.json()
    assert {k for k in policy} >= {"ID", "Name", "Description", "Rules", "Hash", "CreateIndex", "ModifyIndex"}
    r = await admin.put("/v1/acl/token", json={"Description": "app", "Policies": [{"Name": "app-kv"}],
                                               "ServiceIdentities": [{"ServiceName": "web"}]})
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["Policies"] == [{"ID": policy["ID"], "Name": "app-kv"}]
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}] and token["Local"] is False
    assert "Roles" not in token and "NodeIdentities" not in token  # empty lists are omitted, as Consul does
    read = (await admin.get(f"/v1/acl/token/{token['AccessorID']}")).json()
    assert read["SecretID"] == token["SecretID"] and read["Hash"] == token["Hash"]
    clone = (await admin.put(f"/v1/acl/token/{token['AccessorID']}/clone", json={"Description": "copy"})).json()
    assert clone["AccessorID"] != token["AccessorID"] and clone["SecretID"] != token["SecretID"]
    assert clone["ServiceIdentities"] == [{"ServiceName": "web"}] and clone["Description"] == "copy"
    listed = (await admin.get("/v1/acl/tokens", params={"servicename": "web"})).json()
    assert sorted(t["AccessorID"] for t in listed) == sorted([token["AccessorID"], clone["AccessorID"]])
    # update replaces the token's links with the body's (Consul's semantics); secret and accessor stay
    r = await admin.put(f"/v1/acl/token/{token['AccessorID']}", json={"Description": "app v2",
                                                                       "ServiceIdentities": [{"ServiceName": "api"}]})
    assert r.status_code == 200 and r.json()["Description"] == "app v2" and "Policies" not in r.json()
    assert r.json()["SecretID"] == token["SecretID"] and r.json()["ServiceIdentities"] == [{"ServiceName": "api"}]
    r = await admin.put(f"/v1/acl/token/{token['AccessorID']}", json={"SecretID": "6e9e4a2b-1111-2222-3333-4444"
                                                                                  "44444444"})
    assert r.status_code == 400 and "SecretID" in r.text
    r = await admin.delete(f"/v1/acl/token/{token['AccessorID']}")
    assert r.status_code == 200 and r.json() is True
    r = await admin.get(f"/v1/acl/token/{token['AccessorID']}")
    assert (r.status_code, r.text) == (403, "ACL not found")


async def test_a_deleted_or_expired_token_is_acl_not_found(admin, acl_url):
    secret = await make_token(admin, Policies=[{"Name": "global-management"}], ExpirationTTL="1m")
    async with as_token(acl_url, secret) as user:
        assert (await user.get("/v1/acl/token/self")).json()["ExpirationTime"]
        accessor = (await user.get("/v1/acl/token/self")).json()["AccessorID"]
        await admin.delete(f"/v1/acl/token/{accessor}")
        r = await user.get("/v1/catalog/services")
        assert (r.status_code, r.text) == (403, "ACL not found")
    when = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    r = await admin.put("/v1/acl/token", json={"ExpirationTime": when})
    assert r.status_code == 400 and "in the past" in r.text
    r = await admin.put("/v1/acl/token", json={"ExpirationTTL": "1s"})
    assert r.status_code == 400 and "between 1m and 24h" in r.text


async def test_token_self_needs_only_the_token(admin, acl_url):
    secret = await make_token(admin, Description="no rights at all")
    async with as_token(acl_url, secret) as user:
        r = await user.get("/v1/acl/token/self")
        assert r.status_code == 200 and r.json()["Description"] == "no rights at all"
        assert r.json()["SecretID"] == secret
        r = await user.get("/v1/acl/tokens")
        assert r.status_code == 403 and "lacks permission 'acl:read'" in r.text


async def test_secret_ids_are_hidden_from_readers_without_acl_write(admin, acl_url):
    secret = await make_token(admin, Description="reader")
    await admin.put("/v1/acl/policy", json={"Name": "acl-read", "Rules": 'acl = "read"'})
    accessor = (await admin.get("/v1/acl/tokens")).json()
    reader_id = next(t["AccessorID"] for t in accessor if t["Description"] == "reader")
    await admin.put(f"/v1/acl/token/{reader_id}", json={"Description": "reader", "Policies": [{"Name": "acl-read"}]})
    async with as_token(acl_url, secret) as reader:
        listed = (await reader.get("/v1/acl/tokens")).json()
        assert listed and all(t["SecretID"] == "<hidden>" for t in listed)
        r = await reader.put("/v1/acl/token", json={})
        assert r.status_code == 403 and "'acl:write'" in r.text


async def test_policy_errors_name_what_is_wrong_and_change_nothing(admin):
    r = await admin.put("/v1/acl/policy", json={"Name": "bad", "Rules": 'service "web" {\n  policy = "wrte"\n}'})
    assert r.status_code == 400 and "line 1" in r.text and "wrte" in r.text
    r = await admin.put("/v1/acl/policy", json={"Name": "bad", "Rules": 'service "web" { policy = }'})
    assert r.status_code == 400 and "line 1" in r.text
    assert (await admin.put("/v1/acl/policy", json={"Name": "p", "Rules": KV_WRITE})).status_code == 200
    r = await admin.put("/v1/acl/policy", json={"Name": "p", "Rules": KV_WRITE})
    assert r.status_code == 400 and "already exists" in r.text
    r = await admin.put("/v1/acl/token", json={"Policies": [{"Name": "nope"}]})
    assert r.status_code == 400 and "nope" in r.text
    r = await admin.put("/v1/acl/token", json={"Roles": [{"ID": "6e9e4a2b-1111-2222-3333-444444444444"}]})
    assert r.status_code == 400 and "cannot find role" in r.text
    r = await admin.put("/v1/acl/policy", json={"Name": "p2", "Rulez": ""})
    assert r.status_code == 400 and "Rulez" in r.text
    names = sorted(p["Name"] for p in (await admin.get("/v1/acl/policies")).json())
    assert names == ["builtin/global-read-only", "global-management", "p"]
    r = await admin.delete("/v1/acl/policy/00000000-0000-0000-0000-000000000001")
    assert r.status_code == 400 and "builtin" in r.text
    r = await admin.get("/v1/acl/policy/00000000-0000-0000-0000-00000000dead")
    assert (r.status_code, r.text) == (404, "ACL policy not found")


async def test_policy_update_rename_and_read_by_name(admin):
    created = (await admin.put("/v1/acl/policy", json={"Name": "old", "Rules": KV_WRITE})).json()
    r = await admin.put(f"/v1/acl/policy/{created['ID']}", json={"Name": "new", "Rules": 'operator = "read"'})
    assert r.status_code == 200 and r.json()["Name"] == "new"
    assert (await admin.get("/v1/acl/policy/name/old")).status_code == 404
    assert (await admin.get("/v1/acl/policy/name/new")).json()["Rules"] == 'operator = "read"'
    # the old name is free again
    assert (await admin.put("/v1/acl/policy", json={"Name": "old", "Rules": ""})).status_code == 200


async def test_roles_grant_their_policies_and_identities(admin, acl_url):
    await admin.put("/v1/acl/policy", json={"Name": "app-kv", "Rules": KV_WRITE})
    r = await admin.put("/v1/acl/role", json={"Name": "app", "Policies": [{"Name": "app-kv"}],
                                              "ServiceIdentities": [{"ServiceName": "api"}]})
    assert r.status_code == 200, r.text
    role = r.json()
    assert (await admin.get("/v1/acl/role/name/app")).json()["ID"] == role["ID"]
    assert [x["ID"] for x in (await admin.get("/v1/acl/roles", params={"policy": role["Policies"][0]["ID"]})).json()] \
        == [role["ID"]]
    secret = await make_token(admin, Roles=[{"Name": "app"}])
    async with as_token(acl_url, secret) as user:
        assert (await user.put("/v1/kv/app/x", content=b"1")).status_code == 200
        assert (await user.put("/v1/kv/other", content=b"1")).status_code == 403
        assert (await user.get("/v1/agent/connect/ca/leaf/api")).status_code == 200
        assert (await user.get("/v1/agent/connect/ca/leaf/web")).status_code == 403
    await admin.delete(f"/v1/acl/role/{role['ID']}")
    async with as_token(acl_url, secret) as user:  # the role's rights went with it
        assert (await user.put("/v1/kv/app/x", content=b"1")).status_code == 403


async def test_templated_policies(admin, acl_url):
    listed = (await admin.get("/v1/acl/templated-policies")).json()
    assert {"builtin/service", "builtin/node", "builtin/dns"} <= set(listed)
    one = (await admin.get("/v1/acl/templated-policy/name/builtin/service")).json()
    assert one["TemplateName"] == "builtin/service" and '{{.Name}}-sidecar-proxy' in one["Template"]
    preview = (await admin.post("/v1/acl/templated-policy/preview/builtin/service", json={"Name": "api"})).json()
    assert 'service "api-sidecar-proxy"' in preview["Rules"]
    secret = await make_token(admin, TemplatedPolicies=[{"TemplateName": "builtin/service",
                                                          "TemplateVariables": {"Name": "api"}}])
    async with as_token(acl_url, secret) as user:
        assert (await user.get("/v1/agent/connect/ca/leaf/api")).status_code == 200
        assert (await user.get("/v1/agent/connect/ca/leaf/db")).status_code == 403
    r = await admin.put("/v1/acl/token", json={"TemplatedPolicies": [{"TemplateName": "builtin/nope"}]})
    assert r.status_code == 400 and "builtin/nope" in r.text


async def test_tokens_are_read_from_every_place_consul_reads_them(anon):
    for kwargs in ({"headers": {"X-Consul-Token": MANAGEMENT}},
                   {"headers": {"Authorization": f"Bearer {MANAGEMENT}"}},
                   {"params": {"token": MANAGEMENT}}):
        r = await anon.put("/v1/kv/k", content=b"v", **kwargs)
        assert r.status_code == 200, (kwargs, r.text)
    r = await anon.put("/v1/kv/k", content=b"v")
    assert r.status_code == 403
    assert r.text.startswith("Permission denied: anonymous token lacks permission 'key:write' on \"k\"")


async def test_lists_are_filtered_and_say_so_to_authenticated_callers(admin, anon, acl_url):
    for name in ("web", "db"):
        r = await admin.put("/v1/agent/service/register", json={"Name": name, "Port": 1})
        assert r.status_code == 200, r.text
    secret = await make_token(admin, ServiceIdentities=[{"ServiceName": "web"}])
    policy = (await admin.put("/v1/acl/policy", json={"Name": "see-web",
                                                     "Rules": 'service "web" { policy = "read" }'})).json()
    narrow = await make_token(admin, Policies=[{"ID": policy["ID"]}])
    async with as_token(acl_url, secret) as web, as_token(acl_url, narrow) as watcher:
        everything = await web.get("/v1/catalog/services")
        assert set(everything.json()) == {"consul", "web", "db"}  # service_prefix "" read
        assert "X-Consul-Results-Filtered-By-ACLs" not in everything.headers
        partial = await watcher.get("/v1/catalog/services")
        assert set(partial.json()) == {"web"}
        assert partial.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert (await watcher.get("/v1/catalog/service/db")).status_code == 403
    r = await anon.get("/v1/catalog/services")
    assert r.json() == {} and "X-Consul-Results-Filtered-By-ACLs" not in r.headers  # anonymous learns nothing


async def test_concurrent_creates_of_one_policy_name_cannot_both_succeed(admin):
    answers = await asyncio.gather(*(admin.put("/v1/acl/policy", json={"Name": "race", "Rules": ""})
                                     for _ in range(5)))
    assert sorted(a.status_code for a in answers).count(200) == 1
