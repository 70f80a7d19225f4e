"""The external-service registry and the outbound policy, over the Store.

Documents are stored in Tether's own YAML shape (core/external_yaml.format_*), whatever
the user applied (Tether ExternalService or Istio ServiceEntry + DestinationRule), so
what `GET` returns is exactly the model the proxies decide with:

    egress/services/<name>    one ExternalService document
    egress/policy             the OutboundPolicy document (absent: ALLOW_ANY)

An apply is all-or-nothing: the new entries are validated together with every entry
already registered (so an overlap with an existing entry is refused, naming both), then
written in one transaction guarded by compare-and-set on the entries it replaces.
"""

from __future__ import annotations

from typing import Any

from tether.core.errors import InvalidInput, NotFound
from tether.core.external import EgressSnapshot, ExternalService, OutboundPolicy, registry_problems
from tether.core.external_yaml import (
    ExternalConfig, format_external_service, format_outbound_policy, parse_external_documents,
)
from tether.store.base import Check, Delete, Put, Store

PREFIX = "egress/"
SERVICES = "egress/services/"
POLICY = "egress/policy"


class EgressService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def documents(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """(service documents, policy document or None), exactly as stored: re-appliable as
        they are (the blocking index is in the X-Consul-Index header)."""
        services = [e.value for e in self.store.list(SERVICES)]
        policy = self.store.get(POLICY)
        return services, policy.value if policy else None

    def current(self) -> ExternalConfig:
        entries = [e.value for e in self.store.list(SERVICES)]
        policy = self.store.get(POLICY)
        return parse_external_documents(entries + ([policy.value] if policy else []), source="stored registry")

    def snapshot(self) -> EgressSnapshot:
        config = self.current()
        return EgressSnapshot.build(config.services, config.policy or OutboundPolicy())

    async def apply(self, config: ExternalConfig) -> list[str]:
        """Add or replace entries (and the policy, if given) atomically; return their names."""
        existing = {s.name: s for s in self.current().services}
        merged: dict[str, ExternalService] = {**existing, **{s.name: s for s in config.services}}
        problems = registry_problems(merged.values())
        if problems:
            raise InvalidInput("; ".join(problems) + " (nothing was applied)")
        ops: list[Put] = [Put(SERVICES + s.name, format_external_service(s)) for s in config.services]
        if config.policy is not None:
            ops.append(Put(POLICY, format_outbound_policy(config.policy)))
        # Guard against a concurrent apply changing what we validated against (on a
        # multi-server backend another server may write between our read and commit).
        checks = [Check(e.key, e.modify_index) for e in self.store.list(SERVICES)]
        await self.store.commit(ops, checks)
        return [s.name for s in config.services] + (["OutboundPolicy"] if config.policy else [])

    async def delete(self, name: str) -> None:
        if self.store.get(SERVICES + name) is None:
            raise NotFound(f"no external service named {name!r}; see 'tether external list'")
        await self.store.commit([Delete(SERVICES + name)])
