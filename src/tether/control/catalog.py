"""The catalog: nodes, service instances and health checks, over the Store.

Key layout (one document per key, so each blocking query watches only what it reads):

    catalog/nodes/<node>                          node
    catalog/services/<service>/<node>/<id>        service instance (AgentService shape)
    catalog/checks/<service>/<node>/<check-id>    check bound to a service instance
    catalog/nodechecks/<node>/<check-id>          node-level check (e.g. serfHealth)

Writes are idempotent: a document equal to the stored one is not rewritten, so an
agent's periodic re-sync does not wake every watcher.
"""

from __future__ import annotations

from typing import Any, Iterable

from tether.core.errors import InvalidInput, NotFound
from tether.core.health import STATUSES, all_passing, health_entry, worst
from tether.store.base import Delete, Entry, Op, Put, Store

NODES = "catalog/nodes/"
SERVICES = "catalog/services/"
CHECKS = "catalog/checks/"
NODE_CHECKS = "catalog/nodechecks/"
ALL = "catalog/"


def service_key(name: str, node: str, service_id: str) -> str:
    return f"{SERVICES}{name}/{node}/{service_id}"


def check_key(check: dict[str, Any]) -> str:
    if check.get("ServiceID"):
        return f"{CHECKS}{check['ServiceName']}/{check['Node']}/{check['CheckID']}"
    return f"{NODE_CHECKS}{check['Node']}/{check['CheckID']}"


def _validate_segment(what: str, value: str) -> None:
    if not value or "/" in value:
        raise InvalidInput(f"{what} {value!r} must be non-empty and contain no '/'")


def with_indexes(entry: Entry) -> dict[str, Any]:
    return {**entry.value, "CreateIndex": entry.create_index, "ModifyIndex": entry.modify_index}


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writes ----------------------------------------------------------------------

    async def register(
        self,
        node: dict[str, Any],
        services: Iterable[dict[str, Any]] = (),
        checks: Iterable[dict[str, Any]] = (),
    ) -> int:
        """Upsert a node and, optionally, service instances and checks on it, atomically."""
        name = node.get("Node", "")
        _validate_segment("Node", name)
        ops: list[Op] = []
        self._put_if_changed(ops, f"{NODES}{name}", node)
        for svc in services:
            _validate_segment("Service.ID", svc["ID"])
            if svc["Node"] != name:
                raise InvalidInput(f"service {svc['ID']!r} names node {svc['Node']!r}, not {name!r}")
            key = service_key(svc["Service"], name, svc["ID"])
            # A re-registration under a new name must not leave the old instance behind.
            for old in self._instances_by_id(name, svc["ID"]):
                if old.key != key:
                    ops.append(Delete(old.key))
            self._put_if_changed(ops, key, svc)
        for check in checks:
            _validate_segment("CheckID", check["CheckID"])
            if check.get("Status") not in STATUSES:
                raise InvalidInput(f"check {check['CheckID']!r}: Status must be one of {', '.join(STATUSES)}")
            self._put_if_changed(ops, check_key(check), check)
        return await self.store.commit(ops)

    async def deregister(self, node: str, *, service_id: str = "", check_id: str = "") -> int:
        """Remove a service instance (with its checks), a check, or a whole node."""
        ops: list[Op] = []
        if service_id:
            found = self._instances_by_id(node, service_id)
            if not found:
                raise NotFound(f"Unknown service ID {service_id!r} on node {node!r}")
            for entry in found:
                ops.append(Delete(entry.key))
                svc = entry.value
                ops += [Delete(c.key) for c in self.store.list(f"{CHECKS}{svc['Service']}/{node}/")
                        if c.value["ServiceID"] == service_id]
        elif check_id:
            entry = self.find_check(node, check_id)
            if entry is None:
                raise NotFound(f"Unknown check ID {check_id!r} on node {node!r}")
            ops.append(Delete(entry.key))
        else:
            if self.store.get(f"{NODES}{node}") is None:
                raise NotFound(f"Unknown node {node!r}")
            ops.append(Delete(f"{NODES}{node}"))
            ops += [Delete(e.key) for e in self.store.list(NODE_CHECKS + node + "/")]
            for svc in self.node_services(node):
                ops.append(Delete(service_key(svc["Service"], node, svc["ID"])))
            ops += [Delete(e.key) for e in self.store.list(CHECKS) if e.value["Node"] == node]
        return await self.store.commit(ops)

    async def update_check(self, node: str, check_id: str, status: str, output: str) -> int:
        if status not in STATUSES:
            raise InvalidInput(f"Status must be one of {', '.join(STATUSES)}, not {status!r}")
        entry = self.find_check(node, check_id)
        if entry is None:
            raise NotFound(f"Unknown check ID {check_id!r} on node {node!r}")
        ops: list[Op] = []
        self._put_if_changed(ops, entry.key, {**entry.value, "Status": status, "Output": output})
        return await self.store.commit(ops)

    def _put_if_changed(self, ops: list[Op], key: str, doc: dict[str, Any]) -> None:
        current = self.store.get(key)
        if current is None or current.value != doc:
            ops.append(Put(key, doc))

    # -- reads -----------------------------------------------------------------------

    def _instances_by_id(self, node: str, service_id: str) -> list[Entry]:
        return [e for e in self.store.list(SERVICES) if e.value["Node"] == node and e.value["ID"] == service_id]

    def find_check(self, node: str, check_id: str) -> Entry | None:
        entry = self.store.get(f"{NODE_CHECKS}{node}/{check_id}")
        if entry is not None:
            return entry
        suffix = f"/{node}/{check_id}"
        return next((e for e in self.store.list(CHECKS) if e.key.endswith(suffix)), None)

    def node(self, name: str) -> dict[str, Any] | None:
        entry = self.store.get(f"{NODES}{name}")
        return with_indexes(entry) if entry else None

    def nodes(self) -> list[dict[str, Any]]:
        return [with_indexes(e) for e in self.store.list(NODES)]

    def node_services(self, node: str) -> list[dict[str, Any]]:
        return [with_indexes(e) for e in self.store.list(SERVICES) if e.value["Node"] == node]

    def node_checks(self, node: str) -> list[dict[str, Any]]:
        own = [with_indexes(e) for e in self.store.list(f"{NODE_CHECKS}{node}/")]
        return own + [with_indexes(e) for e in self.store.list(CHECKS) if e.value["Node"] == node]

    def services(self) -> dict[str, list[str]]:
        """{name: sorted union of tags}, as /v1/catalog/services returns."""
        out: dict[str, set[str]] = {}
        for e in self.store.list(SERVICES):
            out.setdefault(e.value["Service"], set()).update(e.value["Tags"])
        return {name: sorted(tags) for name, tags in out.items()}

    def instances(self, name: str) -> list[dict[str, Any]]:
        return [with_indexes(e) for e in self.store.list(f"{SERVICES}{name}/")]

    def service_checks(self, name: str) -> list[dict[str, Any]]:
        return [with_indexes(e) for e in self.store.list(f"{CHECKS}{name}/")]

    def connect_instances(self, name: str) -> list[dict[str, Any]]:
        """Proxies fronting `name` plus Connect-native instances of `name`."""
        return [
            with_indexes(e) for e in self.store.list(SERVICES)
            if (e.value["Kind"] == "connect-proxy" and e.value.get("Proxy", {}).get("DestinationServiceName") == name)
            or (e.value["Service"] == name and e.value.get("Connect", {}).get("Native"))
        ]

    def health(self, instances: list[dict[str, Any]], *, passing: bool = False, tag: str = "") -> list[dict[str, Any]]:
        """Health entries (Node, Service, Checks) for instances; `passing` keeps healthy ones."""
        out = []
        node_cache: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for svc in instances:
            if tag and tag not in svc["Tags"]:
                continue
            node_name = svc["Node"]
            if node_name not in node_cache:
                node = self.node(node_name) or {"Node": node_name}
                node_cache[node_name] = (node, [with_indexes(e) for e in self.store.list(f"{NODE_CHECKS}{node_name}/")])
            node, node_checks = node_cache[node_name]
            checks = node_checks + [
                with_indexes(e) for e in self.store.list(f"{CHECKS}{svc['Service']}/{node_name}/")
                if e.value["ServiceID"] == svc["ID"]
            ]
            if passing and not all_passing(checks):
                continue
            out.append(health_entry(node, svc, checks))
        return out

    # Blocking-query prefixes: exactly the documents each read depends on.
    @staticmethod
    def health_prefixes(name: str, *, connect: bool = False) -> tuple[str, ...]:
        services = SERVICES if connect else f"{SERVICES}{name}/"
        return (services, CHECKS if connect else f"{CHECKS}{name}/", NODE_CHECKS, NODES)

    def instance_status(self, node: str, service_id: str) -> str:
        """Worst status of one instance's checks (node checks included); passing if none."""
        return worst(c["Status"] for c in self.node_checks(node) if c["ServiceID"] in ("", service_id))
