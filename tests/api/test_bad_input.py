"""Bad input over a real socket is a 400 naming the problem, never a 500 or a silent change:
deeply nested JSON on every route, request targets that are not UTF-8 text, lone
surrogates, and bodies of the wrong shape."""

from __future__ import annotations

import json
import re

import pytest

from tether.api.acl import route_table
from tether.core.nesting import MAX_DEPTH

DEEP = b"[" * 1000 + b"]" * 1000  # 2 KB; before the limit, every JSON route answered 500 (RecursionError)
#: Routes that parse their body as JSON (a sample across the server's and the agent's routers).
JSON_ROUTES = [("PUT", "/v1/agent/service/register"), ("PUT", "/v1/agent/check/register"),
               ("PUT", "/v1/catalog/register"), ("POST", "/v1/connect/intentions"),
               ("PUT", "/v1/connect/ca/configuration"), ("POST", "/v1/agent/connect/authorize"),
               ("PUT", "/v1/tether/policy"), ("PUT", "/v1/tether/external-services"), ("PUT", "/v1/acl/bootstrap")]


async def test_deep_json_is_refused_naming_the_limit_and_no_route_fails(api, node):
    answers = {}
    for methods, path, _ in route_table(node.app):
        for method in set(methods.split(",")) & {"PUT", "POST"}:
            target = re.sub(r"\{[^}]+\}", "x", path)
            r = await api.request(method, target, content=DEEP, headers={"content-type": "application/json"})
            answers[(method, target)] = (r.status_code, r.text)
    assert not [k for k, (status, _) in answers.items() if status >= 500], answers
    for route in JSON_ROUTES:
        assert answers[route] == (400, f"Request decode failed: JSON nests 1000 levels deep; the limit is {MAX_DEPTH}")
    assert answers[("PUT", "/v1/kv/x")][0] == 200  # a KV value is opaque bytes: stored as sent
    assert (await api.get("/v1/kv/x", params={"raw": "1"})).content == DEEP


async def test_deep_yaml_policy_is_refused(api):
    r = await api.put("/v1/tether/policy", content="".join(" " * i + "a:\n" for i in range(1200)),
                      headers={"content-type": "application/yaml"})
    assert r.status_code == 400 and f"the limit is {MAX_DEPTH}" in r.text


async def test_json_within_the_limit_still_parses(api):
    r = await api.put("/v1/agent/service/register", json={"Name": "web", "Port": 80, "Meta": {"a": "b"}})
    assert r.status_code == 200, r.text


async def test_kv_keys_that_are_not_utf8_are_refused_not_collapsed(api):
    for key in ("%ff%fe", "%fe%ff"):
        r = await api.put(f"/v1/kv/{key}", content=key.encode())
        assert r.status_code == 400 and "byte 0x" in r.text and "not UTF-8" in r.text, r.text
        assert (await api.get(f"/v1/kv/{key}")).status_code == 400
    listed = await api.get("/v1/kv/", params={"keys": "1"})
    assert "\ufffd\ufffd" not in listed.text and listed.status_code in (200, 404)
    r = await api.put("/v1/kv/caf%C3%A9", content=b"ok")  # percent-encoded UTF-8 is text: stored
    assert r.status_code == 200
    assert (await api.get("/v1/kv/", params={"keys": "1"})).json() == ["café"]


async def test_service_names_that_are_not_utf8_are_refused(api):
    for target in ("/v1/catalog/service/%ff", "/v1/health/service/w%e9b", "/v1/agent/service/deregister/%c3"):
        r = await api.request("PUT" if "deregister" in target else "GET", target)
        assert r.status_code == 400 and "path: byte" in r.text, (target, r.text)
    r = await api.get("/v1/health/service/web", params={"tag": b"\xff".decode("latin-1")})  # httpx sends %C3%BF: UTF-8
    assert r.status_code == 200
    r = await api.get("/v1/catalog/service/web?tag=%ff")
    assert r.status_code == 400 and r.text.startswith("query: byte 0xff")


# Bodies that answered 500 (found by a type-and-text fuzz of every JSON route's fields; the
# OpenAPI document does not describe bodies, so schemathesis cannot reach them).
@pytest.mark.parametrize("method, path, body, words", [
    ("PUT", "/v1/catalog/register", {"Node": "ext", "Service": "web"}, "Service: must be an object, got str"),
    ("PUT", "/v1/catalog/register", {"Node": "ext", "Check": 1}, "Check: must be an object"),
    ("PUT", "/v1/catalog/register", {"Node": "ext", "Checks": [1]}, "Checks[0]: expected a JSON object"),
    ("PUT", "/v1/catalog/register", {"Node": "ext", "Check": {"CheckID": 1}}, "Check.CheckID: must be a string"),
    ("PUT", "/v1/catalog/register", {"Node": ["ext"]}, "Node: must be a string"),
    ("PUT", "/v1/internal/tether/sync", {"Node": {"Node": "n1"}, "Services": ["x"]}, "malformed sync body"),
    ("PUT", "/v1/internal/tether/check", {"Node": "n1", "Status": "passing"}, "CheckID must be a string"),
    ("PUT", "/v1/connect/ca/configuration", {"Config": {"PrivateKeyType": []}}, "PrivateKeyType"),
    ("PUT", "/v1/tether/mesh", {"apiVersion": "tether.dev/v1", "kind": [], "spec": {}}, "kind"),
    ("PUT", "/v1/agent/check/register", {"Name": "c", "TTL": "10s", "ServiceID": "\udcff"}, "\\udcff, half"),
    ("POST", "/v1/connect/intentions", {"SourceName": "\ud800", "DestinationName": "db", "Action": "allow"},
     "surrogate pair"),
])
async def test_bodies_of_the_wrong_shape_are_400s(api, method, path, body, words):
    r = await api.request(method, path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 400 and words in r.text, r.text


async def test_an_error_quoting_a_lone_surrogate_from_yaml_is_still_sent(api):
    r = await api.put("/v1/tether/policy", content=b'apiVersion: tether.dev/v1\nkind: "\\udcff"\n',
                      headers={"content-type": "application/yaml"})
    assert r.status_code == 400 and "\\udcff" in r.text


async def test_a_surrogate_pair_is_text(api):
    r = await api.put("/v1/agent/service/register", content=b'{"Name": "web", "Meta": {"m": "\\ud83d\\ude00"}}')
    assert r.status_code == 200, r.text
    assert (await api.get("/v1/agent/service/web")).json()["Meta"] == {"m": "\U0001f600"}
