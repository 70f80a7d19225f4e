"""core/txn.py: operations see what earlier operations of the same transaction staged."""

from __future__ import annotations

from tether.core.txn import KVOp, Pair, evaluate

STORED = {"a": Pair({"Value": "MQ==", "Flags": 0}, 3, 5), "t/x": Pair({"Value": None, "Flags": 0}, 4, 4)}


def run(*ops: KVOp):
    return evaluate(list(ops), STORED.get, lambda p: sorted((k, v) for k, v in STORED.items() if k.startswith(p)),
                    lambda s: s == "s1", lambda key: False)


def test_reads_see_staged_writes_and_deletes():
    out = run(KVOp("set", "t/y", b"2"), KVOp("delete", "t/x"), KVOp("get-tree", "t/"), KVOp("get", "t/y"))
    assert out.errors == [] and [k for _, k, _ in out.results] == ["t/y", "t/y", "t/y"]
    assert out.writes == {"t/y": {"Value": "Mg==", "Flags": 0}, "t/x": None}
    assert out.read == {"t/y": 0, "t/x": 4}  # the guards: what the commit must still find


def test_cas_zero_creates_only_and_errors_drop_every_write():
    assert run(KVOp("cas", "new", b"v", index=0)).errors == []
    out = run(KVOp("set", "b", b"v"), KVOp("cas", "a", b"v", index=0), KVOp("lock", "a", session="s2"))
    assert out.writes == {} and out.results == []
    assert [e["OpIndex"] for e in out.errors] == [1, 2]


def test_lock_keeps_the_holder_and_delete_tree_covers_staged_keys():
    out = run(KVOp("lock", "a", b"me", session="s1"), KVOp("check-session", "a", session="s1"))
    assert out.errors == [] and out.writes["a"]["Session"] == "s1" and out.sessions == {"s1"}
    out = run(KVOp("set", "t/z", b"1"), KVOp("delete-tree", "t/"))
    assert out.writes == {"t/z": None, "t/x": None}
