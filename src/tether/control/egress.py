"""The external-service registry and the outbound policy, over the Store.

Documents are stored as applied (Kubernetes-managed metadata dropped), each kind an
object of its own, so re-applying a ServiceEntry never drops its DestinationRule:

    egress/services/<name>                         an ExternalService or ServiceEntry
    egress/destination-rules/<namespace>/<name>    a DestinationRule (its TLS origination)
    egress/policy                                  the OutboundPolicy document (absent: ALLOW_ANY)

Reading the registry parses them together (DestinationRules folded into the entry that
lists their host); what proxies fetch (`documents`) is that result in Tether's own shape
(core/external_yaml.format_*), exactly the model they decide with.

An apply is all-or-nothing: the new documents are validated together with every document
already stored (so an overlap with an existing entry is refused, naming both), then
written in one transaction guarded by compare-and-set on what it validated against.
"""

from __future__ import annotations

from typing import Any

from tether.core.errors import InvalidInput, NotFound
from tether.core.external import EgressSnapshot, OutboundPolicy
from tether.core.external_yaml import (
    ExternalConfig, format_external_service, format_outbound_policy, parse_external_documents,
)
from tether.store.base import Check, Delete, Put, Store

PREFIX = "egress/"
SERVICES = "egress/services/"
RULES = "egress/destination-rules/"
POLICY = "egress/policy"


class EgressService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def documents(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """(service documents, policy document or None): every entry with its DestinationRules
        folded in, in Tether's shape (the blocking index is in the X-Consul-Index header)."""
        config = self.current()
        policy = self.store.get(POLICY)
        return [format_external_service(s) for s in config.services], policy.value if policy else None

    def applied_with_owner(self) -> list[tuple[dict[str, Any], str]]:
        """`applied()`, each document with the entry name it belongs to ('' for a
        DestinationRule that configures no entry), for ACL filtering."""
        services = self.current().services
        out = []
        for key, doc in self._stored().items():
            if key.startswith("services/"):
                out.append((doc, key.removeprefix("services/")))
            else:
                out.append((doc, _owner(services, doc)))
        return out

    def rule_owners(self, config: ExternalConfig) -> list[str]:
        """For each DestinationRule of `config`, the entry (stored or in `config`) that lists its host, or ''."""
        services = (*self.current().services, *config.services)
        return [_owner(services, doc) for key, doc in config.documents if key.startswith("destination-rules/")]

    def current(self) -> ExternalConfig:
        return self._parse(self._stored())

    def _stored(self) -> dict[str, dict[str, Any]]:
        return {e.key.removeprefix(PREFIX): e.value for e in (*self.store.list(SERVICES), *self.store.list(RULES))}

    def _parse(self, stored: dict[str, dict[str, Any]]) -> ExternalConfig:
        policy = self.store.get(POLICY)
        return parse_external_documents([*stored.values(), *([policy.value] if policy else [])], source="registry")

    def snapshot(self) -> EgressSnapshot:
        config = self.current()
        return EgressSnapshot.build(config.services, config.policy or OutboundPolicy())

    async def apply(self, config: ExternalConfig) -> tuple[list[str], list[str]]:
        """Add or replace documents (and the policy, if given) atomically; return (what was
        applied, warnings: what has no effect yet)."""
        given = dict(config.documents)
        try:
            merged = self._parse(self._stored() | given)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc.message} (nothing was applied)") from None
        ops: list[Put] = [Put(PREFIX + key, doc) for key, doc in given.items()]
        if config.policy is not None:
            ops.append(Put(POLICY, format_outbound_policy(config.policy)))
        # Guard against a concurrent apply changing what we validated against (on a
        # multi-server backend another server may write between our read and commit).
        checks = [Check(e.key, e.modify_index) for e in (*self.store.list(SERVICES), *self.store.list(RULES))]
        await self.store.commit(ops, checks)
        applied, warnings = [], list(config.notes)
        hosts = {h for s in merged.services for h in s.hosts}
        for key, doc in given.items():
            if key.startswith("services/"):
                applied.append(key.removeprefix("services/"))
                continue
            applied.append(f"DestinationRule {key.removeprefix('destination-rules/')}")
            if (host := str(doc["spec"]["host"]).lower()) not in hosts:
                warnings.append(f"DestinationRule {key.removeprefix('destination-rules/')}: spec.host {host!r} matches "
                                "no ExternalService or ServiceEntry, so its TLS settings have no effect until one "
                                "lists that host")
        return applied + (["OutboundPolicy"] if config.policy else []), warnings

    def rule_owner(self, namespace: str, name: str) -> str:
        """The entry a stored DestinationRule configures ('' if none, or if there is no such rule)."""
        entry = self.store.get(f"{RULES}{namespace}/{name}")
        return _owner(self.current().services, entry.value) if entry else ""

    async def delete_rule(self, namespace: str, name: str) -> None:
        if self.store.get(f"{RULES}{namespace}/{name}") is None:
            raise NotFound(f"no DestinationRule {namespace}/{name}; see GET /v1/tether/external-services")
        await self.store.commit([Delete(f"{RULES}{namespace}/{name}")])

    async def delete(self, name: str) -> None:
        if self.store.get(SERVICES + name) is None:
            raise NotFound(f"no external service named {name!r}; see 'tether external list'")
        await self.store.commit([Delete(SERVICES + name)])


def _owner(services: Any, rule: dict[str, Any]) -> str:
    host = str(rule.get("spec", {}).get("host", "")).lower()
    return next((s.name for s in services if host in s.hosts), "")
