"""`PUT /v1/txn`: Consul's transactions over KV and the catalog, all or nothing (core/txn.py decides
the KV operations, control/txn_catalog.py plans the catalog ones).

The evaluation reads the store's current pairs; the commit is one store transaction
guarded by the modify index of every pair read and of every session used, so nothing
changed between the reads and the write. A guard that fails (a concurrent write) runs the
evaluation again, a bounded number of times. Answers: 200 `{"Results": [...], "Errors":
null}`, 409 `{"Results": null, "Errors": [{"OpIndex", "What"}]}`, 413 past 64 operations.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, json_response, read_json
from tether.api.compat import datacenter_dependency
from tether.control.kv import PREFIX
from tether.control.server import ControlPlane
from tether.control.sessions import CAS_ATTEMPTS, SESSIONS
from tether.core.acl import READ, WRITE
from tether.core.errors import Conflict
from tether.control.api import parse_catalog_register
from tether.control.catalog import VIP_COUNTER
from tether.control.txn_catalog import CatalogPlan, plan
from tether.core.txn import CatalogOp, KVOp, Outcome, Pair, evaluate, parse_txn
from tether.store.base import Check, Delete, Put

_READ_VERBS = ("get", "get-tree", "check-index", "check-session", "check-not-exists")


def txn_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency()), Depends(datacenter_dependency(cp.datacenter))])
    store, sessions = cp.store, cp.sessions

    def get(key: str) -> Pair | None:
        entry = store.get(PREFIX + key)
        return Pair(entry.value, entry.create_index, entry.modify_index) if entry else None

    def tree(prefix: str) -> list[tuple[str, Pair]]:
        return [(e.key[len(PREFIX):], Pair(e.value, e.create_index, e.modify_index))
                for e in store.list(PREFIX + prefix)]

    def authorize(request: Request, ops: list[KVOp | CatalogOp]) -> None:
        """Consul's per-operation rule for KV: key:read to read or check, key:write to write, and
        write on every key under a deleted tree (catalog operations are checked as they are planned)."""
        acl = request_acl(request)
        for op in ops:
            if isinstance(op, CatalogOp):
                continue
            if op.verb == "delete-tree":
                acl.require_key_tree_write(op.key)
            else:
                acl.require("key", op.key, READ if op.verb in _READ_VERBS else WRITE)

    async def attempt(request: Request, ops: list[KVOp | CatalogOp]) -> tuple[Outcome, dict[int, CatalogPlan]] | None:
        """One evaluation and commit; None when a guard failed (try again)."""
        outcome = evaluate(ops, get, tree, lambda s: sessions.get(s) is not None,
                           lambda key: sessions.delayed(PREFIX + key))
        require = request_acl(request).require
        staged: dict[str, list[dict[str, Any]]] = {}
        plans = {i: plan(op, cp.catalog, cp.datacenter, require, parse_catalog_register, staged)
                 for i, op in enumerate(ops) if isinstance(op, CatalogOp)}
        new_names = [i for i, p in plans.items() if any(isinstance(o, Put) and o.key == VIP_COUNTER for o in p.ops)]
        for i in new_names[1:]:  # each allocation reads the counter as committed: two would take one address
            plans[i] = CatalogPlan(error="only one new service name per transaction (each new name takes the "
                                         "next virtual IP); register the others in another transaction")
        outcome.errors = sorted(outcome.errors + [{"OpIndex": i, "What": p.error} for i, p in plans.items() if p.error],
                                key=lambda e: e["OpIndex"])
        catalog_ops = [o for p in plans.values() for o in p.ops]
        if outcome.errors or not (outcome.writes or catalog_ops):
            return outcome, plans
        writes = [Put(PREFIX + k, doc) if doc is not None else Delete(PREFIX + k) for k, doc in outcome.writes.items()]
        writes += catalog_ops
        guards = [Check(PREFIX + k, index) for k, index in outcome.read.items()]
        guards += [g for p in plans.values() for g in p.guards]
        for session_id in outcome.sessions:
            found = sessions.get(session_id)
            guards.append(Check(SESSIONS + session_id, found.modify_index if found else 0))
        try:
            await store.commit(writes, guards)
        except Conflict:
            return None
        return outcome, plans

    @r.put("/v1/txn", tags=["txn"],
           **needs("key:write", on="each operation's key; key:read for get, get-tree and the check verbs"))
    async def txn(request: Request) -> Response:
        ops = parse_txn(await read_json(request))
        authorize(request, ops)
        async with cp.kv.write_lock:
            for _ in range(CAS_ATTEMPTS):
                done = await attempt(request, ops)
                if done is not None:
                    outcome, plans = done
                    break
            else:
                return json_response({"Results": None, "Errors": [
                    {"OpIndex": 0, "What": "the transaction kept conflicting with concurrent writes; try again"}]},
                    status=409)
        if outcome.errors:
            return json_response({"Results": None, "Errors": outcome.errors}, status=409)
        answers = [(i, {"KV": _result(key, pair, store)}) for i, key, pair in outcome.results]
        answers += [(i, p.result()) for i, p in plans.items() if p.result is not None]
        results = [answer for _, answer in sorted(answers, key=lambda a: a[0]) if answer is not None]
        return json_response({"Results": results, "Errors": None}, index=store.index(""))

    return r


def _result(key: str, pair: Pair | None, store: Any) -> dict[str, Any]:
    """A result pair as Consul answers it: with its value for a read, without for a write."""
    if pair is None or pair.modify_index == 0:  # written here: its indexes come from the commit
        entry = store.get(PREFIX + key)
        doc, create, modify = (entry.value, entry.create_index, entry.modify_index) if entry else ({}, 0, 0)
        value = None if pair is None else doc.get("Value")
    else:
        doc, create, modify, value = pair.doc, pair.create_index, pair.modify_index, pair.doc.get("Value")
    return {"LockIndex": doc.get("LockIndex", 0), "Key": key, "Flags": doc.get("Flags", 0), "Value": value,
            "Session": doc.get("Session", ""), "CreateIndex": create, "ModifyIndex": modify}
