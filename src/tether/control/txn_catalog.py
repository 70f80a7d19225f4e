"""`/v1/txn`'s Node, Service and Check operations, planned against the catalog.

Each operation becomes the catalog writes `Catalog.register_ops` / `deregister_ops` would
make (so a transaction stores exactly what /v1/catalog/register would), plus, for `cas`
and `delete-cas`, a guard on the object's modify index; the KV writes and these commit as
one store transaction. Bodies are read as /v1/catalog/register reads them (any key casing,
unknown fields refused). An operation sees the catalog as committed, not what earlier
operations of the same transaction staged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tether.control.catalog import NODES, Catalog, check_key, service_key
from tether.core.acl import READ, WRITE
from tether.core.errors import InvalidInput, NotFound
from tether.core.txn import CatalogOp
from tether.store.base import Check, Op

_INDEXES = ("CreateIndex", "ModifyIndex")
Require = Callable[[str, str, str], None]  # (resource, name, access): raises PermissionDenied


@dataclass
class CatalogPlan:
    ops: list[Op] = field(default_factory=list)
    guards: list[Check] = field(default_factory=list)
    error: str = ""
    #: How to read the operation's result after the commit (None: the operation has none).
    result: Callable[[], dict[str, Any] | None] | None = None
    services: list[dict[str, Any]] = field(default_factory=list)  # what a Service set registers


def plan(op: CatalogOp, catalog: Catalog, datacenter: str, require: Require,
         parse_register: Callable[..., tuple[dict, list, list]],
         staged: dict[str, list[dict[str, Any]]]) -> CatalogPlan:
    """`parse_register`: control/api.py's parse_catalog_register (the same validation).
    `staged`: node -> services set by earlier operations of the transaction, so a check may
    name a service registered in the same transaction."""
    def node_services(node: str) -> list[dict[str, Any]]:
        return catalog.node_services(node) + staged.get(node, [])

    try:
        if op.kind == "Node":
            return _node(op, catalog, datacenter, require, parse_register)
        if op.kind == "Service":
            found = _service(op, catalog, datacenter, require, parse_register)
            staged.setdefault(op.node, []).extend(found.services)
            return found
        return _check(op, catalog, datacenter, require, parse_register, node_services)
    except (InvalidInput, NotFound) as exc:
        return CatalogPlan(error=exc.message)


def _without_indexes(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _INDEXES}


def _stale(op: CatalogOp, stored: dict[str, Any] | None) -> bool:
    return op.verb in ("cas", "delete-cas") and (stored or {}).get("ModifyIndex", 0) != op.index


def _node(op: CatalogOp, catalog: Catalog, dc: str, require: Require, parse_register: Callable) -> CatalogPlan:
    name = _field(op.body, "node")
    if not isinstance(name, str) or not name:
        raise InvalidInput("Node.Node: missing")
    stored = catalog.node(name)
    require("node", name, READ if op.verb == "get" else WRITE)
    if op.verb == "get":
        if stored is None:
            return CatalogPlan(error=f'node "{name}" doesn\'t exist')
        return CatalogPlan(result=lambda: {"Node": stored})
    if _stale(op, stored):
        return CatalogPlan(error=f'failed to {"set" if op.verb == "cas" else "delete"} node "{name}", index is stale')
    guards = [Check(f"{NODES}{name}", op.index)] if op.verb in ("cas", "delete-cas") else []
    if op.verb in ("delete", "delete-cas"):
        return CatalogPlan(ops=catalog.deregister_ops(name) if stored else [], guards=guards)
    body = {k: v for k, v in op.body.items() if k not in _INDEXES}
    if "Meta" in body:
        body["NodeMeta"] = body.pop("Meta")
    node, _, _ = parse_register(body, dc, catalog.node_services)
    ops, cas = catalog.register_ops(node)
    return CatalogPlan(ops=ops, guards=guards + cas, result=lambda: {"Node": catalog.node(name)})


def _service(op: CatalogOp, catalog: Catalog, dc: str, require: Require, parse_register: Callable) -> CatalogPlan:
    node_entry = catalog.store.get(f"{NODES}{op.node}")
    service_id = _field(op.body, "id") or _field(op.body, "service")
    stored = next((s for s in catalog.node_services(op.node) if s["ID"] == service_id), None)
    name = stored["Service"] if stored else _field(op.body, "service")
    require("service", str(name), READ if op.verb == "get" else WRITE)
    if op.verb == "get":
        if stored is None:
            return CatalogPlan(error=f'service "{service_id}" on node "{op.node}" doesn\'t exist')
        return CatalogPlan(result=lambda: {"Service": stored})
    if _stale(op, stored):
        return CatalogPlan(error=f'failed to {"set" if op.verb == "cas" else "delete"} service "{service_id}" '
                                 f'on node "{op.node}", index is stale')
    guards = [Check(service_key(stored["Service"], op.node, service_id) if stored else
                    service_key(str(name), op.node, service_id), op.index)] if op.verb in ("cas", "delete-cas") else []
    if op.verb in ("delete", "delete-cas"):
        ops = catalog.deregister_ops(op.node, service_id=service_id) if stored else []
        return CatalogPlan(ops=ops, guards=guards)
    if node_entry is None:
        return CatalogPlan(error=f'Missing node registration: node "{op.node}" doesn\'t exist')
    body = {k: v for k, v in op.body.items() if k not in _INDEXES}
    _, services, _ = parse_register({"Node": op.node, "Service": body}, dc, catalog.node_services)
    ops, cas = catalog.register_ops(node_entry.value, services)
    found = services[0]["ID"]

    def result() -> dict[str, Any] | None:
        return {"Service": next((s for s in catalog.node_services(op.node) if s["ID"] == found), None)}

    return CatalogPlan(ops=ops, guards=guards + cas, result=result, services=services)


def _check(op: CatalogOp, catalog: Catalog, dc: str, require: Require, parse_register: Callable,
           node_services: Callable[[str], list[dict[str, Any]]]) -> CatalogPlan:
    node = _field(op.body, "node")
    check_id = _field(op.body, "checkid", "id") or _field(op.body, "name")
    if not isinstance(node, str) or not node or not isinstance(check_id, str) or not check_id:
        raise InvalidInput("Check.Check: Node and CheckID (or Name) are required")
    entry = catalog.find_check(node, check_id)
    stored = {**entry.value, "CreateIndex": entry.create_index, "ModifyIndex": entry.modify_index} if entry else None
    owner = (stored or {}).get("ServiceName") or ""
    if owner:
        require("service", owner, READ if op.verb == "get" else WRITE)
    else:
        require("node", node, READ if op.verb == "get" else WRITE)
    if op.verb == "get":
        if stored is None:
            return CatalogPlan(error=f'check "{check_id}" on node "{node}" doesn\'t exist')
        return CatalogPlan(result=lambda: {"Check": stored})
    if _stale(op, stored):
        return CatalogPlan(error=f'failed to {"set" if op.verb == "cas" else "delete"} check "{check_id}" '
                                 f'on node "{node}", index is stale')
    guards = [Check(entry.key, op.index)] if entry and op.verb in ("cas", "delete-cas") else []
    if op.verb in ("delete", "delete-cas"):
        return CatalogPlan(ops=catalog.deregister_ops(node, check_id=check_id) if stored else [], guards=guards)
    node_entry = catalog.store.get(f"{NODES}{node}")
    if node_entry is None:
        return CatalogPlan(error=f'Missing node registration: node "{node}" doesn\'t exist')
    body = {k: v for k, v in op.body.items() if k not in _INDEXES}
    _, _, checks = parse_register({"Node": node, "Check": body}, dc, node_services)
    if checks[0]["ServiceName"]:
        require("service", checks[0]["ServiceName"], WRITE)
    if op.verb == "cas" and entry is None:
        guards = [Check(check_key(checks[0]), 0)]  # create only
    ops, cas = catalog.register_ops(node_entry.value, (), checks)

    def result() -> dict[str, Any] | None:
        found = catalog.find_check(node, checks[0]["CheckID"])
        return {"Check": {**found.value, "CreateIndex": found.create_index,
                          "ModifyIndex": found.modify_index}} if found else None

    return CatalogPlan(ops=ops, guards=guards + cas, result=result)


def _field(body: dict[str, Any], *names: str) -> Any:
    """The first value whose key is one of `names` (lowercase): Consul reads these keys in any case."""
    return next((v for k, v in body.items() if k.lower() in names), "")
