"""Services and checks defined in config files: registered at start, kept in step on reload.

Consul's `service { ... }` / `services [...]` / `check { ... }` blocks are registered by the
agent itself, each with its own `token`, else `acl.tokens.config_file_service_registration`,
else the default token: that is the token its sidecar acts with. On a reload (SIGHUP,
`/v1/agent/reload`) the new set is applied as a difference: new and changed definitions
are registered, those no longer in any file are deregistered, and services registered
through the API are never touched.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from tether.agent.agent import Agent
from tether.core.agent_config import AclConfig
from tether.core.errors import InvalidInput, NotFound
from tether.core.service import parse_check_definition, parse_service_definition

log = logging.getLogger("tether.agent.config")


def _split_token(definition: dict[str, Any]) -> tuple[dict[str, Any], str]:
    body = {k: v for k, v in definition.items() if k.lower() != "token"}
    token = next((v for k, v in definition.items() if k.lower() == "token"), "")
    if not isinstance(token, str):
        raise InvalidInput("token: must be a string")
    return body, token


class ConfigServices:
    def __init__(self, agent: Agent, acl: AclConfig) -> None:
        self.agent = agent
        self.acl = acl
        self._service_ids: set[str] = set()
        self._check_ids: set[str] = set()

    async def apply(self, definitions: Iterable[tuple[str, dict[str, Any]]],
                    checks: Iterable[tuple[str, dict[str, Any]]] = ()) -> None:
        """Make the config-defined services and checks exactly `definitions` and `checks`.

        Every definition is validated before anything changes; a bad one refuses the whole
        set (naming its file), so a typo in a reload never deregisters anything."""
        parsed = []
        for source, raw in definitions:
            body, token = _split_token(raw)
            try:
                parsed.append((parse_service_definition(body), token))
            except InvalidInput as exc:
                raise InvalidInput(f"{source}: service: {exc.message}") from None
        parsed_checks = []
        for source, raw in checks:
            body, _ = _split_token(raw)
            try:
                parsed_checks.append(parse_check_definition(body))
            except InvalidInput as exc:
                raise InvalidInput(f"{source}: check: {exc.message}") from None
        wanted = {d.ID or d.Name for d, _ in parsed}
        for service_id in sorted(self._service_ids - wanted):
            try:
                await self.agent.deregister_service(service_id)
                log.info("service %s is no longer in the configuration: deregistered", service_id)
            except NotFound:
                pass
        fallback = self.acl.config_file_service_registration or self.acl.default
        for definition, token in parsed:
            await self.agent.register_service(definition, token=token or fallback)
        registered = {await self.agent.register_check(check) for check in parsed_checks}
        for check_id in sorted(self._check_ids - registered):
            try:
                await self.agent.deregister_check(check_id)
            except NotFound:
                pass
        self._service_ids, self._check_ids = wanted, registered
