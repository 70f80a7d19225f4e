"""The catalog: nodes, service instances and health checks, over the Store.

Key layout (one document per key, so each blocking query watches only what it reads):

    catalog/nodes/<node>                          node
    catalog/services/<service>/<node>/<id>        service instance (AgentService shape)
    catalog/checks/<service>/<node>/<check-id>    check bound to a service instance
    catalog/nodechecks/<node>/<check-id>          node-level check (e.g. serfHealth)
    catalog/vips/<service>                        {"IP": "240.x.y.z"}: the service's virtual IP
    catalog/namespaces/<service>                  {"Namespace": ns}: the one namespace of the name
    catalog/byid/<node>/svc/<id>                  {"Key": ...}: where an instance lives
    catalog/byid/<node>/chk/<check-id>            {"Key": ...}: where a check lives

The `byid` pointers are written in the same transaction as what they point to, so
node-scoped lookups (deregister by ID, TTL updates, a node's services) touch only that
node's documents, on any backend.

Writes are idempotent: a document equal to the stored one is not rewritten, so an
agent's periodic re-sync does not wake every watcher.
"""

from __future__ import annotations

from typing import Any, Iterable

from tether.core.errors import Conflict, InvalidInput, NotFound
from tether.core.health import STATUSES, all_passing, health_entry, worst
from tether.core.namespaces import ALL_NAMESPACES, DEFAULT_NAMESPACE, namespace_conflict, namespace_of
from tether.core.vip import format_virtual_ip
from tether.store.base import Check, Delete, Entry, Op, Put, Store

NODES = "catalog/nodes/"
SERVICES = "catalog/services/"
CHECKS = "catalog/checks/"
NODE_CHECKS = "catalog/nodechecks/"
BY_ID = "catalog/byid/"
VIPS = "catalog/vips/"
VIP_COUNTER = "meta/vip-counter"
NAMESPACE_CLAIMS = "catalog/namespaces/"
_RETRIES = 3


def service_key(name: str, node: str, service_id: str) -> str:
    return f"{SERVICES}{name}/{node}/{service_id}"


def _svc_pointer(node: str, service_id: str) -> str:
    return f"{BY_ID}{node}/svc/{service_id}"


def _chk_pointer(node: str, check_id: str) -> str:
    return f"{BY_ID}{node}/chk/{check_id}"


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
        """Upsert a node and, optionally, service instances and checks on it, atomically. A
        write that lost a race for a name's namespace claim or a virtual IP is planned again."""
        services, checks = list(services), list(checks)
        for _ in range(_RETRIES - 1):
            try:
                return await self.store.commit(*self.register_ops(node, services, checks))
            except Conflict:
                continue
        return await self.store.commit(*self.register_ops(node, services, checks))

    def register_ops(
        self,
        node: dict[str, Any],
        services: Iterable[dict[str, Any]] = (),
        checks: Iterable[dict[str, Any]] = (),
    ) -> tuple[list[Op], list[Check]]:
        """The writes (and their guards) of `register`, for a caller that commits them with others (txn)."""
        name = node.get("Node", "")
        _validate_segment("Node", name)
        ops: list[Op] = []
        self._put_if_changed(ops, f"{NODES}{name}", node)
        services = list(services)
        claims = self._claim_namespaces(ops, name, services)
        for svc in services:
            _validate_segment("Service.ID", svc["ID"])
            if svc["Node"] != name:
                raise InvalidInput(f"service {svc['ID']!r} names node {svc['Node']!r}, not {name!r}")
            key = service_key(svc["Service"], name, svc["ID"])
            # A re-registration under a new name must not leave the old instance behind.
            old = self._instance_entry(name, svc["ID"])
            if old is not None and old.key != key:
                ops.append(Delete(old.key))
            self._put_if_changed(ops, key, svc)
            self._put_if_changed(ops, _svc_pointer(name, svc["ID"]), {"Key": key})
        cas = claims + self._allocate_virtual_ips(ops, {s["Service"] for s in services if s["Kind"] == ""})
        for check in checks:
            _validate_segment("CheckID", check["CheckID"])
            if check.get("Status") not in STATUSES:
                raise InvalidInput(f"check {check['CheckID']!r}: Status must be one of {', '.join(STATUSES)}")
            key = check_key(check)
            old = self.find_check(name, check["CheckID"])
            if old is not None and old.key != key:
                ops.append(Delete(old.key))
            self._put_if_changed(ops, key, check)
            self._put_if_changed(ops, _chk_pointer(name, check["CheckID"]), {"Key": key})
        return ops, cas

    def _claim_namespaces(self, ops: list[Op], node: str, services: list[dict[str, Any]]) -> list[Check]:
        """Refuse a service name in a second namespace (core/namespaces.py); the instances
        these documents replace (same node and ID) do not count. Each name's namespace is
        also claimed under catalog/namespaces/<name>, compare-and-set, so two registrations
        racing to put one new name in two namespaces cannot both commit (a claim left by
        instances since removed is taken over)."""
        replaced = {(node, s["ID"]) for s in services}
        names = {s["Service"] for s in services}
        existing = {d["Service"]: namespace_of(d) for n in names for d in self.instances(n)
                    if (d["Node"], d["ID"]) not in replaced}
        problem = namespace_conflict(services, existing)
        if problem:
            raise InvalidInput(problem)
        guards = []
        for svc in {s["Service"]: s for s in services}.values():
            claim = self.store.get(NAMESPACE_CLAIMS + svc["Service"])
            guards.append(Check(NAMESPACE_CLAIMS + svc["Service"], claim.modify_index if claim else 0))
            self._put_if_changed(ops, NAMESPACE_CLAIMS + svc["Service"], {"Namespace": namespace_of(svc)})
        return guards

    def namespace_of(self, service: str) -> str:
        """The namespace `service` is registered in (`default` when it is not registered)."""
        found = self.instances(service)
        return namespace_of(found[0]) if found else DEFAULT_NAMESPACE

    def _allocate_virtual_ips(self, ops: list[Op], names: set[str]) -> list[Check]:
        """Give each new service name the next virtual IP, in the same transaction.

        The counter is compare-and-set, so two servers can never hand out one address twice.
        """
        new = sorted(n for n in names if self.store.get(VIPS + n) is None)
        if not new:
            return []
        counter = self.store.get(VIP_COUNTER)
        next_ordinal = counter.value["Next"] if counter else 1
        for offset, service in enumerate(new):
            ops.append(Put(VIPS + service, {"IP": format_virtual_ip(next_ordinal + offset)}))
        ops.append(Put(VIP_COUNTER, {"Next": next_ordinal + len(new)}))
        return [Check(VIP_COUNTER, counter.modify_index if counter else 0)]

    def virtual_ips(self) -> dict[str, str]:
        """{service: virtual IP} for every service that ever had an instance."""
        return {e.key[len(VIPS):]: e.value["IP"] for e in self.store.list(VIPS)}

    async def deregister(self, node: str, *, service_id: str = "", check_id: str = "") -> int:
        """Remove a service instance (with its checks), a check, or a whole node."""
        return await self.store.commit(self.deregister_ops(node, service_id=service_id, check_id=check_id))

    def deregister_ops(self, node: str, *, service_id: str = "", check_id: str = "") -> list[Op]:
        """The deletes of `deregister`, for a caller that commits them with others (txn)."""
        ops: list[Op] = []
        if service_id:
            entry = self._instance_entry(node, service_id)
            if entry is None:
                raise NotFound(f"Unknown service ID {service_id!r} on node {node!r}")
            ops += [Delete(entry.key), Delete(_svc_pointer(node, service_id))]
            for check in self._node_check_entries(node):
                if check.value["ServiceID"] == service_id:
                    ops += [Delete(check.key), Delete(_chk_pointer(node, check.value["CheckID"]))]
        elif check_id:
            entry = self.find_check(node, check_id)
            if entry is None:
                raise NotFound(f"Unknown check ID {check_id!r} on node {node!r}")
            ops += [Delete(entry.key), Delete(_chk_pointer(node, check_id))]
        else:
            if self.store.get(f"{NODES}{node}") is None:
                raise NotFound(f"Unknown node {node!r}")
            ops.append(Delete(f"{NODES}{node}"))
            for pointer in self.store.list(f"{BY_ID}{node}/"):
                ops += [Delete(pointer.key), Delete(pointer.value["Key"])]
            ops += [Delete(e.key) for e in self.store.list(f"{NODE_CHECKS}{node}/")]
        return ops

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

    def _deref(self, pointer_key: str) -> Entry | None:
        pointer = self.store.get(pointer_key)
        return self.store.get(pointer.value["Key"]) if pointer else None

    def _instance_entry(self, node: str, service_id: str) -> Entry | None:
        return self._deref(_svc_pointer(node, service_id))

    def _node_check_entries(self, node: str) -> list[Entry]:
        found = (self.store.get(p.value["Key"]) for p in self.store.list(f"{BY_ID}{node}/chk/"))
        return [e for e in found if e is not None]

    def find_check(self, node: str, check_id: str) -> Entry | None:
        return self.store.get(f"{NODE_CHECKS}{node}/{check_id}") or self._deref(_chk_pointer(node, check_id))

    def node(self, name: str) -> dict[str, Any] | None:
        entry = self.store.get(f"{NODES}{name}")
        return with_indexes(entry) if entry else None

    def nodes(self) -> list[dict[str, Any]]:
        return [with_indexes(e) for e in self.store.list(NODES)]

    def node_services(self, node: str) -> list[dict[str, Any]]:
        found = (self._deref(p.key) for p in self.store.list(f"{BY_ID}{node}/svc/"))
        return [with_indexes(e) for e in found if e is not None]

    def node_checks(self, node: str) -> list[dict[str, Any]]:
        own = [with_indexes(e) for e in self.store.list(f"{NODE_CHECKS}{node}/")]
        # The byid pointers cover node checks too: only the service checks are added here.
        return own + [with_indexes(e) for e in self._node_check_entries(node) if not e.key.startswith(NODE_CHECKS)]

    def services(self, ns: str = ALL_NAMESPACES) -> dict[str, list[str]]:
        """{name: sorted union of tags} of namespace `ns`, as /v1/catalog/services returns."""
        out: dict[str, set[str]] = {}
        for e in self.store.list(SERVICES):
            if ns == ALL_NAMESPACES or namespace_of(e.value) == ns:
                    out.setdefault(e.value["Service"], set()).update(e.value["Tags"])
        return {name: sorted(tags) for name, tags in out.items()}

    def all_instances(self) -> list[dict[str, Any]]:
        return [with_indexes(e) for e in self.store.list(SERVICES)]

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
