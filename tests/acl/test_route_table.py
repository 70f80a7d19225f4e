"""Every route declares the ACL it needs, enforces it, and docs/api.md lists it.

Each /v1 route of a dev agent is called with the anonymous token under
`default_policy = deny`: a route that declares a permission must refuse (403 naming a
permission) or, for a filtered list, answer without the objects it may not show. A route
added without a declaration, or a declaration the handler does not enforce, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tether import daemon
from tether.api.acl import format_route_table, route_table
from tether.core.agent_config import AclConfig
from tether.testing.agent import serve_in_process

from acl_kit import MANAGEMENT

ACL = AclConfig(enabled=True, default_policy="deny", initial_management=MANAGEMENT)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ZERO_UUID = "6e9e4a2b-1111-2222-3333-444444444444"

#: Path parameters, by name.
PARAMS = {"name": "web", "node": "n1", "service_id": "web", "check_id": "web-check", "key": "app/x",
          "service": "web", "state": "any", "accessor": ZERO_UUID, "policy_id": ZERO_UUID, "role_id": ZERO_UUID,
          "kind": "agent", "intention_id": "{intention}"}
#: Bodies and query strings a route needs to reach its permission check.
BODIES = {
    ("PUT", "/v1/agent/service/register"): {"Name": "web", "Port": 80},
    ("PUT", "/v1/agent/check/register"): {"Name": "c", "TTL": "10s"},
    ("PUT", "/v1/agent/check/update/{check_id}"): {"Status": "passing"},
    ("POST", "/v1/agent/connect/authorize"): {"Target": "web", "ClientCertURI": "spiffe://x.tether/ns/default/dc/dc1/svc/db"},
    ("PUT", "/v1/catalog/register"): {"Node": "n9", "Address": "192.0.2.1"},
    ("PUT", "/v1/catalog/deregister"): {"Node": "n1"},
    ("POST", "/v1/connect/ca/sign"): {"CSR": "x", "Service": "web"},
    ("PUT", "/v1/connect/ca/configuration"): {"Config": {"LeafCertTTL": "72h"}},
    ("POST", "/v1/connect/intentions"): {"SourceName": "a", "DestinationName": "web", "Action": "allow"},
    ("PUT", "/v1/connect/intentions/{intention_id}"): {"SourceName": "a", "DestinationName": "web", "Action": "deny"},
    ("PUT", "/v1/connect/intentions/exact"): {"Action": "allow"},
    ("PUT", "/v1/internal/tether/sync"): {"Node": {"Node": "n1"}, "Services": [], "Checks": []},
    ("PUT", "/v1/internal/tether/check"): {"Node": "n1", "CheckID": "c", "Status": "passing"},
    ("PUT", "/v1/tether/mesh"): {"defaultIntention": "allow"},
    ("PUT", "/v1/agent/token/{kind}"): {"Token": "x"},
    ("PUT", "/v1/acl/token"): {}, ("PUT", "/v1/acl/policy"): {"Name": "p"}, ("PUT", "/v1/acl/role"): {"Name": "r"},
    ("PUT", "/v1/acl/token/{accessor}"): {}, ("PUT", "/v1/acl/policy/{policy_id}"): {"Name": "p"},
    ("PUT", "/v1/acl/role/{role_id}"): {"Name": "r"}, ("PUT", "/v1/acl/token/{accessor}/clone"): {},
}
RAW = {
    ("PUT", "/v1/tether/policy"): b"apiVersion: tether.dev/v1\nkind: ServerPolicy\nspec:\n  service: web\n",
    ("PUT", "/v1/tether/external-services"): b"apiVersion: tether.dev/v1\nkind: ExternalService\nmetadata:\n"
                                            b"  name: pg\nspec:\n  hosts: [pg.example.com]\n  addresses: [203.0.113.5]\n"
                                            b"  ports: [{number: 5432, name: pg, protocol: TCP}]\n"
                                            b"  resolution: NONE\n",
    ("PUT", "/v1/kv/{key}"): b"v",
}
QUERY = {"/v1/connect/intentions/exact": {"source": "a", "destination": "web"},
         "/v1/connect/intentions/check": {"source": "a", "destination": "web"},
         "/v1/connect/intentions/match": {"by": "destination", "name": "web"},
         "/v1/acl/templated-policy/name/{name}": {}, }
PATH_OVERRIDES = {"/v1/acl/templated-policy/name/{name:path}": "/v1/acl/templated-policy/name/builtin/service",
                  "/v1/acl/templated-policy/preview/{name:path}": "/v1/acl/templated-policy/preview/builtin/service",
                  "/v1/kv/{key:path}": "/v1/kv/app/x"}


async def dev_routes():
    async with daemon.open_runtime(daemon.Options(role="dev", http_port=0, dns_port=-1, managed_proxies=False,
                                                  acl=ACL)) as app:
        return route_table(app)


async def test_every_route_declares_the_acl_it_needs():
    undeclared = [(m, p) for m, p, declared in await dev_routes() if declared is None]
    assert undeclared == []


async def test_docs_api_md_lists_every_route_as_declared():
    table = format_route_table(await dev_routes())
    text = DOCS.read_text()
    missing = [row for row in table.splitlines() if row not in text]
    assert missing == [], "docs/api.md's ACL table is out of date; run scripts/acl_table.py"


async def seed(admin: httpx.AsyncClient) -> str:
    """Objects the by-name routes need, so they reach their check rather than a 404."""
    r = await admin.put("/v1/agent/service/register",
                        json={"Name": "web", "Port": 80, "Check": {"CheckID": "web-check", "TTL": "1m"}})
    assert r.status_code == 200, r.text
    r = await admin.post("/v1/connect/intentions", json={"SourceName": "b", "DestinationName": "web",
                                                         "Action": "allow"})
    assert r.status_code == 200, r.text
    return r.json()["ID"]


def concrete(path: str, intention: str) -> str:
    if path in PATH_OVERRIDES:
        return PATH_OVERRIDES[path]
    out = path
    for name, value in PARAMS.items():
        out = out.replace("{" + name + "}", value)
    return out.replace("{intention}", intention)


async def test_anonymous_requests_under_deny_are_refused_or_filtered():
    rows = await dev_routes()
    async with serve_in_process("dev", node="n1", acl=ACL) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers={"X-Consul-Token": MANAGEMENT}) as admin:
            intention = await seed(admin)
        failures = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as anon:
            for methods, path, declared in rows:
                for method in methods.split(","):
                    if method == "HEAD":
                        continue
                    target = concrete(path, intention)
                    kwargs = {"params": QUERY.get(path, {})}
                    if (method, path) in RAW:
                        kwargs["content"] = RAW[(method, path)]
                    elif method in ("PUT", "POST"):
                        kwargs["json"] = BODIES.get((method, path), {})
                    r = await anon.request(method, target, **kwargs)
                    permission = declared["permission"]
                    if permission == "none":
                        ok = r.status_code != 403 or "bootstrap" in path
                    elif declared["filtered"]:
                        ok = r.status_code in (200, 404) and "web" not in r.text
                    else:
                        ok = r.status_code == 403 and re.search(r"lacks permission '[a-z]+:[a-z]+'", r.text)
                    if not ok:
                        failures.append(f"{method} {target} ({permission}): {r.status_code} {r.text[:120]}")
        assert failures == []


@pytest.mark.parametrize("header", ["X-Consul-Token", "Authorization"])
async def test_an_unknown_token_is_refused_even_on_filtered_lists(header):
    async with serve_in_process("dev", node="n1", acl=ACL) as url:
        value = "6e9e4a2b-0000-0000-0000-000000000000"
        async with httpx.AsyncClient(base_url=url, headers={header: value if header != "Authorization"
                                                            else f"Bearer {value}"}) as bogus:
            for path in ("/v1/catalog/services", "/v1/agent/services", "/v1/connect/intentions"):
                r = await bogus.get(path)
                assert (r.status_code, r.text) == (403, "ACL not found"), path
            assert (await bogus.get("/v1/agent/connect/ca/roots")).status_code == 200  # public trust anchors
