"""PUT /v1/txn through py-consul's `txn.put` (unchanged) and raw HTTP: KV verbs, all or nothing."""

from __future__ import annotations

import base64
from urllib.parse import urlparse

import consul
import httpx
import pytest
from consul.exceptions import ClientError


@pytest.fixture(scope="module")
def c(dev_agent):
    url = urlparse(dev_agent.url)
    return consul.Consul(host=url.hostname, port=url.port)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kv(verb: str, key: str, **fields) -> dict:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


def test_sets_and_reads_in_one_transaction(c):
    answer = c.txn.put([kv("set", "t/a", Value=b64("1")), kv("set", "t/b", Value=b64("2"), Flags=7),
                        kv("get", "t/a"), kv("get-tree", "t/")])
    assert answer["Errors"] is None
    results = [r["KV"] for r in answer["Results"]]
    assert [(r["Key"], r["Value"]) for r in results] == [("t/a", None), ("t/b", None), ("t/a", b64("1")),
                                                         ("t/a", b64("1")), ("t/b", b64("2"))]
    assert results[1]["Flags"] == 7 and results[0]["ModifyIndex"] == results[1]["ModifyIndex"] > 0  # one revision
    assert c.kv.get("t/b")[1]["Value"] == b"2"


def test_a_failing_operation_writes_nothing_and_every_error_is_reported(c, dev_agent):
    c.kv.put("t/c", "old")
    index = c.kv.get("t/c")[1]["ModifyIndex"]
    body = [kv("set", "t/new", Value=b64("x")), kv("cas", "t/c", Value=b64("y"), Index=index + 100),
            kv("get", "t/missing"), kv("check-not-exists", "t/c")]
    r = httpx.put(f"{dev_agent.url}/v1/txn", json=body)
    assert r.status_code == 409
    assert r.json()["Results"] is None
    assert [(e["OpIndex"], e["What"]) for e in r.json()["Errors"]] == [
        (1, f'current modify index {index} for key "t/c" != {index + 100}'),
        (2, 'key "t/missing" doesn\'t exist'), (3, 'key "t/c" exists')]
    assert c.kv.get("t/new")[1] is None and c.kv.get("t/c")[1]["Value"] == b"old"
    with pytest.raises(ClientError, match="409"):
        c.txn.put(body)


def test_cas_delete_and_trees(c):
    c.kv.put("d/x", "1")
    c.kv.put("d/y", "2")
    index = c.kv.get("d/x")[1]["ModifyIndex"]
    answer = c.txn.put([kv("check-index", "d/x", Index=index), kv("delete-cas", "d/x", Index=index),
                        kv("delete-tree", "d/"), kv("get-tree", "d/")])
    assert answer["Errors"] is None and answer["Results"] == []
    assert c.kv.get("d/", recurse=True)[1] is None


def test_lock_verbs_share_sessions_with_kv(c):
    sid = c.session.create(lock_delay=0)
    other = c.session.create(lock_delay=0)
    answer = c.txn.put([kv("lock", "l/k", Value=b64("me"), Session=sid), kv("check-session", "l/k", Session=sid)])
    assert answer["Errors"] is None and answer["Results"][0]["KV"]["Session"] == sid
    assert c.kv.put("l/k", "x", acquire=other) is False  # the transaction's lock is a real lock
    with pytest.raises(ClientError, match="409"):
        c.txn.put([kv("lock", "l/k", Session=other)])
    assert c.txn.put([kv("unlock", "l/k", Session=sid)])["Errors"] is None
    assert c.kv.get("l/k")[1]["LockIndex"] == 1
    c.session.destroy(sid)
    c.session.destroy(other)


@pytest.mark.parametrize("body, status, words", [
    ([kv("set", "k", Value=b64("v"))] * 65, 413, "Transaction contains too many operations (65 > 64)"),
    ([kv("sett", "k")], 400, "[0].KV.Verb: must be one of"),
    ([kv("cas", "k", Value=b64("v"))], 400, "[0].KV.Index: required for cas"),
    ([kv("lock", "k")], 400, "[0].KV.Session: required for lock"),
    ([kv("set", "k", Value="%%%")], 400, "[0].KV.Value: must be base64"),
    ([{"Node": {"Verb": "sett", "Node": {"Node": "n1"}}}], 400, "[0].Node.Verb: must be one of"),
    ([{"Service": {"Verb": "set", "Service": {"Service": "x"}}}], 400, "[0].Service.Node: missing"),
    ({"KV": {}}, 400, "expected a JSON array"),
])
def test_bad_transactions_are_refused_naming_the_operation(dev_agent, body, status, words):
    r = httpx.put(f"{dev_agent.url}/v1/txn", json=body)
    assert r.status_code == status and words in r.text, r.text


def test_node_service_and_check_operations_commit_with_kv(c):
    answer = c.txn.put([
        {"Node": {"Verb": "set", "Node": {"Node": "txn-n", "Address": "192.0.2.30", "Meta": {"rack": "r1"}}}},
        kv("set", "txn/flag", Value=b64("on")),
    ])
    assert answer["Errors"] is None and answer["Results"][0]["Node"]["Address"] == "192.0.2.30"
    answer = c.txn.put([
        {"Service": {"Verb": "set", "Node": "txn-n", "Service": {"ID": "cache-1", "Service": "cache", "Port": 6379}}},
        {"Check": {"Verb": "set", "Check": {"Node": "txn-n", "CheckID": "cache-up", "Name": "up",
                                            "Status": "passing", "ServiceID": "cache-1"}}},
        {"Node": {"Verb": "get", "Node": {"Node": "txn-n"}}},
    ])
    assert answer["Errors"] is None, answer
    service, check, node = (answer["Results"][0]["Service"], answer["Results"][1]["Check"],
                            answer["Results"][2]["Node"])
    assert (service["Service"], service["Port"], check["ServiceName"], node["Meta"]) == ("cache", 6379, "cache",
                                                                                        {"rack": "r1"})
    _, entries = c.health.service("cache", passing=True)
    assert [(e["Node"]["Node"], e["Service"]["ID"]) for e in entries] == [("txn-n", "cache-1")]

    # A stale cas on the service fails the whole transaction: the KV write with it does not land.
    stale = [{"Service": {"Verb": "cas", "Node": "txn-n",
                          "Service": {"ID": "cache-1", "Service": "cache", "Port": 1, "ModifyIndex": 1}}},
             kv("set", "txn/flag", Value=b64("off"))]
    with pytest.raises(ClientError, match="index is stale"):
        c.txn.put(stale)
    assert c.kv.get("txn/flag")[1]["Value"] == b"on" and c.catalog.service("cache")[1][0]["ServicePort"] == 6379
    assert c.txn.put([{"Node": {"Verb": "delete", "Node": {"Node": "txn-n"}}}])["Errors"] is None
    assert c.catalog.node("txn-n")[1] is None and c.health.service("cache")[1] == []


def test_two_new_service_names_in_one_transaction_are_refused(c, dev_agent):
    c.catalog.register("txn-m", "192.0.2.31")
    body = [{"Service": {"Verb": "set", "Node": "txn-m", "Service": {"Service": name, "Port": 1}}}
            for name in ("svc-one", "svc-two")]
    with pytest.raises(ClientError, match="only one new service name per transaction"):
        c.txn.put(body)
    assert c.catalog.service("svc-one")[1] == []
    assert c.txn.put(body[:1])["Errors"] is None and c.txn.put(body[1:])["Errors"] is None
    vips = httpx.get(f"{dev_agent.url}/v1/tether/virtual-ips").json()
    assert vips["svc-one"] != vips["svc-two"]
    c.catalog.deregister("txn-m")
