"""Intentions, server policy and mesh settings in the Store: the control plane's authorization state.

Key layout (one global revision over all of it, docs/architecture.md):

    intentions/<uuid>                               an intention (Consul's JSON shape, no indexes)
    intentions-by-name/<source>/<destination>       {"ID": <uuid>}: at most one intention per pair
    policy/mesh                                     the MeshPolicy document (mesh settings)
    policy/servers/<service>/<port or "*">          a ServerPolicy document
    policy/linkerd/<kind>/<namespace>/<name>        a Linkerd policy object, as applied
    policy/istio/<namespace>/<name>                 an Istio AuthorizationPolicy, as applied

Linkerd objects are stored one by one and joined into server policies (policy_linkerd.
resolve_linkerd) whenever the state is read, so they may be applied in any order and an
object applied again never drops what others attached to it; what agents fetch carries
the joined result as ServerPolicy documents, the same shape as before. A Server's named
port resolves against the registrations' Meta `tether-port-<name>` (core/named_ports.py),
so registrations are part of the authorization state's index too.

An intention and its name pointer are written in one transaction; creating one checks
that the pointer does not exist yet (compare-and-set with index 0), so two concurrent
creates of `web -> db` cannot both succeed. A policy apply validates the whole file
first and then writes every document in one transaction: all or nothing.

The server answers `check` and `match` from a PolicySnapshot it rebuilds only when the
store index of `intentions/` + `policy/` moved, with the same `decide` the agent runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from tether.core.authz import PolicySnapshot, Source, decide
from tether.core.errors import Conflict, InvalidInput, NotFound
from tether.core.intentions import Intention, format_intention, intention_key, parse_intention, split_qualified
from tether.core.named_ports import named_ports
from tether.core.namespaces import service_namespaces
from tether.core.policy import MeshPolicy, ServerPolicy, parse_action
from tether.core.policy_istio import IstioObject, resolve_istio
from tether.core.policy_linkerd import NAMESPACE_KIND, LinkerdObject, Resolution, resolve_linkerd
from tether.core.policy_yaml import (
    PolicyDocuments, format_mesh_policy, format_server_policy, merge_mesh_policy, parse_policy_objects,
    snapshot_from_state,
)
from tether.core.spiffe import DEFAULT_NAMESPACE, service_id
from tether.store.base import Check, Delete, Op, Put, Store

log = logging.getLogger("tether.intentions")

INTENTIONS = "intentions/"
BY_NAME = "intentions-by-name/"
POLICY = "policy/"
MESH_KEY = "policy/mesh"
SERVERS = "policy/servers/"
LINKERD = "policy/linkerd/"
ISTIO = "policy/istio/"
#: Service registrations: their named ports (Meta tether-port-<name>) resolve Linkerd Servers.
CATALOG_SERVICES = "catalog/services/"
#: What the agent's cache watches: every change to authorization state moves this index.
AUTHZ_PREFIXES = (INTENTIONS, POLICY, CATALOG_SERVICES)
_ANY_PORT = "*"
# A create or update that loses a race to a concurrent write is re-read and retried this often.
_RETRIES = 5


def _pointer(source: str, destination: str) -> str:
    """The name pointer of `source -> destination`, each `name` or `ns/name`."""
    (src_ns, src), (dst_ns, dst) = split_qualified(source), split_qualified(destination)
    return f"{BY_NAME}{intention_key(src, dst, src_ns, dst_ns)}"


def _stored(i: Intention) -> dict[str, Any]:
    """The document kept under intentions/<id>: Consul's shape without computed fields."""
    doc = format_intention(i)
    for computed in ("Precedence", "CreateIndex", "ModifyIndex"):
        doc.pop(computed, None)
    return doc


def server_policy_key(service: str, port: int | None) -> str:
    return f"{SERVERS}{service}/{_ANY_PORT if port is None else port}"


class IntentionService:
    """CRUD for intentions and policy documents over a Store, plus the server-side snapshot."""

    def __init__(self, store: Store, *, default_intention: str | None = None, initial_default: str = "allow") -> None:
        # `default_intention` is an explicit setting (the -default-policy flag): written at
        # start even over a stored value. Otherwise a stored value is kept, and a new store
        # gets `initial_default` (dev agent: allow; `tether server`: deny).
        self.store = store
        self._explicit = parse_action(default_intention, field="-default-policy") if default_intention else None
        self._initial = parse_action(initial_default, field="default intention")
        self._snapshot: PolicySnapshot | None = None
        self._mesh: tuple[int, MeshPolicy] | None = None
        self._resolved: tuple[int, Resolution] | None = None
        self._trust_domain = ""
        self._datacenter = "dc1"

    async def start(self, trust_domain: str, datacenter: str = "dc1") -> None:
        """Write the mesh settings document if it is missing or the flag overrides it."""
        self._trust_domain, self._datacenter = trust_domain, datacenter
        current = self.mesh()
        stored = self.store.get(MESH_KEY)
        want = current
        if stored is None:
            want = MeshPolicy(current.default_policy, self._explicit or self._initial)
        elif self._explicit and self._explicit != current.default_intention:
            want = merge_mesh_policy(current, MeshPolicy(default_intention=self._explicit), {"defaultIntention"})
        if stored is None or want != current:
            await self.store.commit([Put(MESH_KEY, format_mesh_policy(want))])
            log.info("mesh default intention is %s", want.default_intention)

    # -- intentions: reads ----------------------------------------------------------------

    def list(self) -> list[Intention]:
        """Every intention, in evaluation order (precedence, then deny before allow)."""
        return list(self.snapshot().intentions)

    def get(self, intention_id: str) -> Intention:
        entry = self.store.get(f"{INTENTIONS}{intention_id}")
        if entry is None:
            raise NotFound(f"no intention with ID {intention_id!r}; list them with 'tether intention list'")
        return parse_intention({**entry.value, "CreateIndex": entry.create_index, "ModifyIndex": entry.modify_index})

    def get_exact(self, source: str, destination: str) -> Intention:
        pointer = self.store.get(_pointer(source, destination))
        if pointer is None:
            raise NotFound(f"no intention {source} -> {destination}")
        return self.get(pointer.value["ID"])

    def find_exact(self, source: str, destination: str) -> Intention | None:
        try:
            return self.get_exact(source, destination)
        except NotFound:
            return None

    # -- intentions: writes ---------------------------------------------------------------

    async def create(self, intention: Intention) -> Intention:
        """Create a new intention (POST /v1/connect/intentions); Conflict if the pair exists."""
        if intention.id is not None:
            raise InvalidInput("ID: must not be set when creating an intention; the server assigns it")
        new = _with(intention, id=str(uuid.uuid4()))
        try:
            await self.store.commit(self._put_ops(new), [Check(_pointer(new.source, new.destination), 0)])
        except Conflict:
            raise self._duplicate(new.source, new.destination) from None
        return self.get(new.id)  # type: ignore[arg-type]

    async def upsert_exact(self, source: str, destination: str, body: Mapping[str, Any]) -> Intention:
        """PUT /v1/connect/intentions/exact: create, or replace the pair's action/description/meta."""
        scope = ("sourcename", "destinationname", "sourcens", "destinationns", "id")
        fields = {k: v for k, v in body.items() if k.lower() not in scope}
        (src_ns, src), (dst_ns, dst) = split_qualified(source), split_qualified(destination)
        given = parse_intention({**fields, "SourceName": src, "DestinationName": dst, "SourceNS": src_ns,
                                 "DestinationNS": dst_ns})
        for _ in range(_RETRIES):
            pointer = self.store.get(_pointer(source, destination))
            if pointer is None:
                try:
                    return await self.create(given)
                except Conflict:
                    continue  # created meanwhile: replace it
            old_id = pointer.value["ID"]
            new = _with(given, id=old_id)
            checks = [Check(pointer.key, pointer.modify_index)]
            try:
                await self.store.commit([Put(f"{INTENTIONS}{old_id}", _stored(new))], checks)
            except Conflict:
                continue
            return self.get(old_id)
        raise Conflict(f"intention {source} -> {destination} kept changing under this write; retry")

    async def update(self, intention_id: str, body: Mapping[str, Any]) -> Intention:
        """PUT /v1/connect/intentions/<id>: replace the intention (it may move to a new pair)."""
        old = self.get(intention_id)
        new = _with(parse_intention({k: v for k, v in body.items() if k.lower() != "id"}), id=intention_id)
        ops: list[Op] = self._put_ops(new)
        checks = [Check(f"{INTENTIONS}{intention_id}", old.modify_index or 0)]
        if (new.source, new.destination) != (old.source, old.destination):
            ops.append(Delete(_pointer(old.source, old.destination)))
            checks.append(Check(_pointer(new.source, new.destination), 0))
        try:
            await self.store.commit(ops, checks)
        except Conflict:
            if self.find_exact(new.source, new.destination) not in (None, old):
                raise self._duplicate(new.source, new.destination) from None
            raise Conflict(f"intention {intention_id} changed while it was being updated; read it again and retry") from None
        return self.get(intention_id)

    async def delete(self, intention_id: str) -> Intention:
        old = self.get(intention_id)
        await self.store.commit(
            [Delete(f"{INTENTIONS}{intention_id}"), Delete(_pointer(old.source, old.destination))]
        )
        return old

    async def delete_exact(self, source: str, destination: str) -> bool:
        """Delete the pair's intention; False when there was none (deleting is idempotent)."""
        found = self.find_exact(source, destination)
        if found is None:
            return False
        await self.delete(found.id)  # type: ignore[arg-type]
        return True

    def _put_ops(self, i: Intention) -> list[Op]:
        return [Put(f"{INTENTIONS}{i.id}", _stored(i)), Put(_pointer(i.source, i.destination), {"ID": i.id})]

    def _duplicate(self, source: str, destination: str) -> Conflict:
        existing = self.find_exact(source, destination)
        ident = f" (ID {existing.id})" if existing else ""
        return Conflict(f"an intention {source} -> {destination} exists already{ident}; use -replace "
                        "(or PUT /v1/connect/intentions/exact) to change it")

    # -- policy -----------------------------------------------------------------------------

    def mesh(self) -> MeshPolicy:
        """The mesh settings (defaults when none are stored yet)."""
        entry = self.store.get(MESH_KEY)
        if entry is None:
            return MeshPolicy(default_intention=self._explicit or self._initial)
        cached = self._mesh
        if cached is None or cached[0] != entry.modify_index:  # parsed once per change, not per response
            parsed = parse_policy_objects([entry.value], source=MESH_KEY).mesh or MeshPolicy()
            cached = self._mesh = (entry.modify_index, parsed)
        return cached[1]

    def server_policies(self, service: str | None = None) -> list[ServerPolicy]:
        prefix = SERVERS if service is None else f"{SERVERS}{service}/"
        docs = [e.value for e in self.store.list(prefix)]
        return list(parse_policy_objects(docs, source=prefix).server_policies) if docs else []

    def linkerd_objects(self) -> list[LinkerdObject]:
        """Every stored Linkerd object (the documents as applied, Kubernetes-managed fields dropped)."""
        docs = [e.value for e in self.store.list(LINKERD)]
        return list(parse_policy_objects(docs, source=LINKERD).linkerd) if docs else []

    def istio_objects(self) -> list[IstioObject]:
        docs = [e.value for e in self.store.list(ISTIO)]
        return list(parse_policy_objects(docs, source=ISTIO).istio) if docs else []

    def resolution(self) -> Resolution:
        """The stored Linkerd objects and Istio policies joined into server policies (re-joined
        only after a change)."""
        index = self.store.index((POLICY, CATALOG_SERVICES))
        cached = self._resolved
        if cached is None or cached[0] != index:
            resolved = self._resolve(self.linkerd_objects(), self.istio_objects(), self.server_policies())
            cached = self._resolved = (index, resolved)
            for conflict in cached[1].conflicts:  # refused at apply; only a hand-edited store gets here
                log.warning("policy skipped: %s", conflict)
        return cached[1]

    def _resolve(self, linkerd: Any, istio: Any, tether: Any) -> Resolution:
        td = self._trust_domain or "check.invalid"
        taken = [(p.service, p.port) for p in tether]
        first = resolve_linkerd(linkerd, td, taken=taken, named_ports=self._named_ports(), namespaces=self.namespaces())
        second = resolve_istio(istio, td, taken=taken + [(p.service, p.port) for p in first.policies])
        return Resolution(first.policies + second.policies, first.notes, first.conflicts + second.conflicts)

    def plan(self, docs: PolicyDocuments) -> list[str]:
        """Check `docs` against what is stored; raise InvalidInput on a conflict, else return
        the notes about this file's Linkerd objects that will have no effect (yet)."""
        linkerd = {o.key: o for o in self.linkerd_objects()} | {o.key: o for o in docs.linkerd}
        istio = {o.key: o for o in self.istio_objects()} | {o.key: o for o in docs.istio}
        tether = {(p.service, p.port): p for p in (*self.server_policies(), *docs.server_policies)}
        resolved = self._resolve(linkerd.values(), istio.values(), tether.values())
        if resolved.conflicts:
            raise InvalidInput("; ".join(resolved.conflicts) + " (nothing was applied)")
        mine = tuple(f"{o.kind} {o.namespace}/{o.name}:" for o in docs.linkerd)
        return [n for o in docs.linkerd for n in o.notes] + [n for n in resolved.notes if n.startswith(mine)]

    def linkerd_documents_for(self, service: str) -> list[dict[str, Any]]:
        """The stored Linkerd objects that make `service`'s server policies, as applied: the
        Servers covering it, what targets those Servers, and the authentications named."""
        objects = self.linkerd_objects()
        covering = {p.name for p in self.resolution().policies if p.service == service}
        servers = [o for o in objects if o.kind == "Server" and o.name in covering
                   and (o.value.services is None or service in o.value.services)]
        keys = {(o.namespace, o.name) for o in servers}
        labels = {(o.namespace, o.name): set(o.value.labels) for o in servers}
        out = list(servers)
        refs: set[tuple[str, str, str]] = set()
        for o in objects:
            if o.kind == "ServerAuthorization":
                hit = ((o.namespace, o.value.server) in keys if o.value.server is not None else
                       any(ns == o.namespace and set(o.value.selector) <= have for (ns, _), have in labels.items()))
            elif o.kind == "AuthorizationPolicy":
                v = o.value
                hit = v.target in keys if v.target_kind == "Server" else any(ns == o.namespace for ns, _ in keys)
                if hit:
                    refs.update(r for r in (v.identity_ref, v.network_ref) if r)
            else:
                continue
            if hit:
                out.append(o)
        out += [o for o in objects if (o.kind, o.namespace, o.name) in refs]
        # a Namespace whose default inbound policy covers the service (policy `namespace.<ns>`)
        out += [o for o in objects if o.kind == NAMESPACE_KIND and f"namespace.{o.name}" in covering]
        return [o.doc for o in out]

    def _named_ports(self) -> dict[tuple[str, str], tuple[int, ...]]:
        return named_ports(e.value for e in self.store.list(CATALOG_SERVICES))

    def namespaces(self) -> dict[str, str]:
        """{service: namespace} of every registered service (core/namespaces.py)."""
        return service_namespaces(e.value for e in self.store.list(CATALOG_SERVICES))

    def linkerd_services(self, docs: PolicyDocuments) -> set[str | None]:
        """The services the file's Linkerd objects govern, for the ACL check: a Server's
        own; a Server-targeted authorization's Server's; None (needs mesh:write) for an
        object whose reach is every service, a namespace or every policy that names it."""
        objects = {o.key: o for o in (*self.linkerd_objects(), *docs.linkerd)}
        servers = {(o.namespace, o.name): o.value for o in objects.values() if o.kind == "Server"}
        out: set[str | None] = set()

        def governs(value: Any) -> None:
            out.update(value.services if value is not None and value.services is not None else (None,))

        for o in docs.linkerd:
            if o.kind == "Server":
                governs(o.value)
            elif o.kind == "ServerAuthorization" and o.value.server is not None:
                governs(servers.get((o.namespace, o.value.server)))
            elif o.kind == "ServerAuthorization":
                want = set(o.value.selector)
                matched = [v for k, v in servers.items() if k[0] == o.namespace and want <= set(v.labels)]
                for value in matched or [None]:
                    governs(value)
            elif o.kind == "AuthorizationPolicy" and o.value.target_kind == "Server":
                governs(servers.get(o.value.target))
            else:
                out.add(None)
        out.update(o.service for o in docs.istio)
        return out

    async def apply(self, docs: PolicyDocuments) -> int:
        """Write every document of a parsed (hence fully validated) file in one transaction.

        Intentions are upserts by (source, destination); server policies replace the one
        for the same (service, port); a Linkerd object replaces the one of the same kind,
        namespace and name (and nothing else); a MeshPolicy changes only the fields it sets.
        `parse_policy_documents` already refused the whole file if any document was bad,
        `plan` refuses a Linkerd Server that overlaps another policy, and the commit is one
        transaction, so nothing is ever half-applied. Returns the new store revision.
        """
        self.plan(docs)
        for _ in range(_RETRIES):
            ops: list[Op] = []
            checks: list[Check] = []
            for i in docs.intentions:
                pointer = self.store.get(_pointer(i.source, i.destination))
                ident = pointer.value["ID"] if pointer else str(uuid.uuid4())
                checks.append(Check(_pointer(i.source, i.destination), pointer.modify_index if pointer else 0))
                ops += self._put_ops(_with(i, id=ident))
            for p in docs.server_policies:
                ops.append(Put(server_policy_key(p.service, p.port), format_server_policy(p)))
            for o in docs.linkerd:
                ops.append(Put(LINKERD + o.key, o.doc))
            for a in docs.istio:
                ops.append(Put(ISTIO + a.key, a.doc))
            if docs.mesh is not None:
                ops.append(Put(MESH_KEY, format_mesh_policy(merge_mesh_policy(self.mesh(), docs.mesh, docs.mesh_fields))))
            # What is stored already as written is not rewritten: re-applying a file (or what
            # `tether get -o yaml` printed) changes nothing and wakes no watcher.
            ops = [op for op in ops if not self._unchanged(op)]
            try:
                return await self.store.commit(ops, checks)
            except Conflict:
                continue  # an intention of the file was created or changed meanwhile: re-plan
        raise Conflict("the policy kept changing under this apply; retry")

    def _unchanged(self, op: Op) -> bool:
        stored = self.store.get(op.key) if isinstance(op, Put) else None
        return stored is not None and stored.value == op.value  # type: ignore[union-attr]

    async def set_mesh(self, docs: PolicyDocuments) -> MeshPolicy:
        if docs.mesh is None or docs.intentions or docs.server_policies:
            raise InvalidInput("send exactly one MeshPolicy document (or its spec) to change the mesh settings")
        await self.apply(docs)
        return self.mesh()

    async def delete_linkerd(self, kind: str, namespace: str, name: str) -> None:
        key = f"{LINKERD}{kind}/{namespace}/{name}"
        if self.store.get(key) is None:
            raise NotFound(f"no {kind} {namespace}/{name}; GET /v1/tether/policy lists what is stored")
        await self.store.commit([Delete(key)])

    async def delete_istio(self, namespace: str, name: str) -> None:
        await self.store.commit([Delete(f"{ISTIO}{namespace}/{name}")])

    async def delete_server_policy(self, service: str, port: int | None) -> None:
        key = server_policy_key(service, port)
        if self.store.get(key) is None:
            where = f"{service}:{port}" if port is not None else f"{service} (all ports)"
            raise NotFound(f"no server policy for {where}; see 'tether policy get {service}'")
        await self.store.commit([Delete(key)])

    # -- state and decisions ------------------------------------------------------------------

    def index(self) -> int:
        return self.store.index(AUTHZ_PREFIXES)

    def state(self) -> dict[str, Any]:
        """Everything an agent (or proxy, or the CLI) needs to build the same PolicySnapshot."""
        index = self.index()
        intentions = []
        for e in self.store.list(INTENTIONS):
            intentions.append({**e.value, "CreateIndex": e.create_index, "ModifyIndex": e.modify_index})
        return {
            "Index": index,
            "TrustDomain": self._trust_domain,
            "Datacenter": self._datacenter,
            "Intentions": intentions,
            "Policies": [e.value for e in self.store.list(SERVERS)]
            + [format_server_policy(p) for p in self.resolution().policies],
            "Mesh": format_mesh_policy(self.mesh()),
            "Namespaces": {k: v for k, v in self.namespaces().items() if v != DEFAULT_NAMESPACE},
        }

    def snapshot(self) -> PolicySnapshot:
        """The current PolicySnapshot, rebuilt only when the authorization state changed."""
        snap = self._snapshot
        if snap is not None and snap.index == self.index():
            return snap
        known = {(i.id, i.modify_index): i for i in snap.intentions} if snap else None
        snap = snapshot_from_state(self.state(), self._trust_domain, known=known)  # type: ignore[arg-type]
        self._snapshot = snap
        return snap

    def check(self, source: str, destination: str) -> bool:
        """Consul's /check: would a connection from service `source` to `destination` be
        allowed? Each may be Consul's `ns/name`; a bare destination is in the namespace it is
        registered in, a bare source in `default`."""
        dst_ns, dst = split_qualified(destination)
        return decide(self.snapshot(), self.source_for(source), dst, None,
                      namespace=dst_ns if "/" in destination else None).allowed

    def source_for(self, name: str) -> Source:
        """A caller with the identity of service `name` (the default namespace, as a Consul
        SourceName without SourceNS) or `ns/name` in this mesh's trust domain."""
        ns, svc = split_qualified(name)
        try:
            ident = service_id(self._trust_domain, self._datacenter, svc, ns)
        except InvalidInput as exc:
            raise InvalidInput(f"source: {exc.message}") from None
        return Source(ident)


def _with(i: Intention, *, id: str) -> Intention:  # noqa: A002 - Consul's field name
    return Intention(i.source_name, i.destination_name, i.action, i.description, i.meta, id, i.source_type,
                     source_ns=i.source_ns, destination_ns=i.destination_ns)
