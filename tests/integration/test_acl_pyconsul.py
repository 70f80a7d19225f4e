"""py-consul's ACL calls, unchanged, against a dev agent with ACLs on (issue 9's "Done means"):
bootstrap, tokens, policies, roles, templated policies, and its `token=` argument on the
other APIs."""

from __future__ import annotations

from urllib.parse import urlparse

import consul
import pytest

from tether.core.agent_config import AclConfig
from tether.testing.agent import serve_in_process


@pytest.fixture
async def c():
    """py-consul pointed at a fresh dev agent with ACLs on (default deny) and not bootstrapped."""
    async with serve_in_process("dev", node="n1", acl=AclConfig(enabled=True, default_policy="deny")) as url:
        u = urlparse(url)
        yield consul.Consul(host=u.hostname, port=u.port)


async def in_thread(fn, *args, **kwargs):
    """py-consul is blocking; the agent runs in this event loop, so call it from a thread."""
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_bootstrap_tokens_and_policies(c):
    root = await in_thread(c.acl.bootstrap)
    secret = root["SecretID"]
    with pytest.raises(consul.ACLPermissionDenied):
        await in_thread(c.acl.bootstrap)

    policy = await in_thread(c.acl.policy.create, "kv-app", token=secret, description="app keys",
                             rules={"key_prefix": {"app/": {"policy": "write"}}})
    assert policy["Name"] == "kv-app"
    assert (await in_thread(c.acl.policy.read, policy["ID"], token=secret))["Description"] == "app keys"
    updated = await in_thread(c.acl.policy.update, policy["ID"], "kv-app", token=secret,
                              rules={"key_prefix": {"app/": {"policy": "read"}}})
    assert '"read"' in updated["Rules"]
    assert "kv-app" in [p["Name"] for p in await in_thread(c.acl.policy.list, token=secret)]

    token = await in_thread(c.acl.token.create, token=secret, description="app", policies_name=["kv-app"],
                            service_identities=[{"ServiceName": "web"}], node_identities=["n1:dc1"],
                            expiration_ttl="1h")
    assert token["Policies"][0]["Name"] == "kv-app" and token["NodeIdentities"] == [{"NodeName": "n1",
                                                                                      "Datacenter": "dc1"}]
    assert token["ExpirationTime"]
    read = await in_thread(c.acl.token.read, token["AccessorID"], token=secret)
    assert read["SecretID"] == token["SecretID"]
    assert (await in_thread(c.acl.token.read_self, token=token["SecretID"]))["AccessorID"] == token["AccessorID"]
    clone = await in_thread(c.acl.token.clone, token["AccessorID"], token=secret, description="clone")
    assert clone["Description"] == "clone"
    listed = await in_thread(c.acl.token.list, token=secret, policy=policy["ID"])
    assert sorted(t["AccessorID"] for t in listed) == sorted([token["AccessorID"], clone["AccessorID"]])
    await in_thread(c.acl.token.update, token["AccessorID"], token=secret, description="app v2",
                    policies_name=["kv-app"])
    assert (await in_thread(c.acl.token.read, token["AccessorID"], token=secret))["Description"] == "app v2"
    assert await in_thread(c.acl.token.delete, clone["AccessorID"], token=secret) is True
    assert await in_thread(c.acl.policy.delete, policy["ID"], token=secret) is True


async def test_roles_and_templated_policies(c):
    secret = (await in_thread(c.acl.bootstrap))["SecretID"]
    role = await in_thread(c.acl.role.create, "web-role", token=secret, description="web",
                           service_identities=[{"ServiceName": "web"}])
    assert (await in_thread(c.acl.role.read_by_name, "web-role", token=secret))["ID"] == role["ID"]
    await in_thread(c.acl.role.update, role["ID"], "web-role2", token=secret,
                    service_identities=[{"ServiceName": "web"}])
    assert [r["Name"] for r in await in_thread(c.acl.role.list, token=secret)] == ["web-role2"]
    token = await in_thread(c.acl.token.create, token=secret, roles_id=[role["ID"]])
    leaf = await in_thread(c.agent.connect.ca.leaf, "web", token=token["SecretID"])
    assert leaf["Service"] == "web" and leaf["ServiceURI"].endswith("/svc/web")
    with pytest.raises(consul.ACLPermissionDenied):
        await in_thread(c.agent.connect.ca.leaf, "db", token=token["SecretID"])
    assert await in_thread(c.acl.role.delete, role["ID"], token=secret) is True
    templates = await in_thread(c.acl.templated_policy.list, token=secret)
    assert "builtin/service" in templates
    assert (await in_thread(c.acl.templated_policy.read, "builtin/dns", token=secret))["TemplateName"] == "builtin/dns"


async def test_token_argument_on_the_other_apis(c):
    secret = (await in_thread(c.acl.bootstrap))["SecretID"]
    policy = await in_thread(c.acl.policy.create, "kv-web", token=secret,
                             rules={"key_prefix": {"web/": {"policy": "write"}}})
    web = (await in_thread(c.acl.token.create, token=secret, policies_id=[policy["ID"]],
                           service_identities=[{"ServiceName": "web"}]))["SecretID"]

    assert await in_thread(c.kv.put, "web/conf", "1", token=web) is True
    with pytest.raises(consul.ACLPermissionDenied):
        await in_thread(c.kv.put, "db/conf", "1", token=web)
    with pytest.raises(consul.ACLPermissionDenied):
        await in_thread(c.kv.put, "web/conf", "1")  # no token: anonymous, default deny
    _, entry = await in_thread(c.kv.get, "web/conf", token=web)
    assert entry["Value"] == b"1"

    assert await in_thread(c.agent.service.register, "web", port=8080, token=web) is True
    with pytest.raises(consul.ACLPermissionDenied):
        await in_thread(c.agent.service.register, "db", port=5432, token=web)
    _, services = await in_thread(c.catalog.services, token=web)
    assert "web" in services
    _, nodes = await in_thread(c.health.service, "web", token=web)
    assert [n["Service"]["Service"] for n in nodes] == ["web"]
    assert await in_thread(c.agent.service.deregister, "web", token=web) is True
