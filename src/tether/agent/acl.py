"""ACLs on the agent: its own tokens, the tokens its services were registered with, and a
cache of token resolutions that outlives a control-plane outage.

Three kinds of secret reach an agent:

  - **ACL tokens** (a caller's X-Consul-Token): resolved by the servers. A client agent
    caches each resolution for `acl.token_ttl` (30 s) and, while no server answers,
    applies `acl.down_policy`: `extend-cache` (the default) keeps using what it cached,
    `async-cache` also answers stale entries at once and refreshes them behind, `deny`
    and `allow` do what they say. A token nobody cached is denied under the cache
    policies, so an outage never widens anyone's rights.
  - **Proxy secrets**: each managed sidecar gets a random secret of its own in its
    environment (`CONSUL_HTTP_TOKEN`), which this agent alone knows. It stands for the token
    the sidecar's service was registered with, so re-registering a service with a new
    token takes effect in its running sidecar at once, with no restart, and a sidecar
    adopted by a restarted agent keeps working (the secrets are persisted with the data).
  - **The agent's own tokens** (`acl.tokens.*`): `agent` for its traffic to the servers,
    `default` for requests that carry none, `dns` for the DNS interface, `agent_recovery`
    for agent endpoints when no server can be reached, `config_file_service_registration`
    for services defined in config files. Set at run time with `PUT /v1/agent/token/:kind`
    (`tether acl set-agent-token`), persisted when `acl.enable_token_persistence` is on.

Every file written here is 0600 (tether.secretfile). Nothing here logs a secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from tether.control.acl import ACL_NOT_FOUND, AclConfig
from tether.core.acl import DENY, WRITE, READ, Authorizer, Rule, allow_everything, compile_authorizer
from tether.core.acl_model import parse_time
from tether.core.errors import InvalidInput, PermissionDenied, Unavailable
from tether.secretfile import read_private_json, write_private_json

log = logging.getLogger("tether.agent.acl")

TOKEN_KINDS = ("default", "agent", "agent_recovery", "dns", "config_file_service_registration", "replication")
#: Consul's older names for PUT /v1/agent/token/:kind.
TOKEN_ALIASES = {"acl_token": "default", "acl_agent_token": "agent", "acl_agent_master_token": "agent_recovery",
                 "agent_master": "agent_recovery", "acl_replication_token": "replication"}
AGENT_TOKENS_FILE = "acl-tokens.json"
LOCAL_TOKENS_FILE = "service-tokens.json"


class AgentTokens:
    """The agent's own tokens: from the config file, then from the API (persisted if asked)."""

    def __init__(self, config: AclConfig, data_dir: Path | None) -> None:
        self.config = config
        self._path = data_dir / AGENT_TOKENS_FILE if data_dir and config.enable_token_persistence else None
        self._tokens = {kind: getattr(config, kind, "") or "" for kind in TOKEN_KINDS}
        if self._path is not None:  # tokens set through the API win over the file's, as in Consul
            self._tokens.update({k: v for k, v in read_private_json(self._path, {}).items() if k in TOKEN_KINDS})
        self.on_change: list[Callable[[str], None]] = []

    def get(self, kind: str) -> str:
        return self._tokens[kind]

    def set(self, kind: str, secret: str) -> str:
        kind = TOKEN_ALIASES.get(kind, kind)
        if kind not in TOKEN_KINDS:
            raise InvalidInput(f"token kind {kind!r} is unknown; use one of {', '.join(TOKEN_KINDS)}")
        self._tokens[kind] = secret
        if self._path is not None:
            write_private_json(self._path, {k: v for k, v in self._tokens.items() if v})
        for callback in self.on_change:
            callback(kind)
        return kind

    @property
    def persisted(self) -> bool:
        return self._path is not None


class LocalTokens:
    """Registration tokens per local service ID and one secret per managed proxy."""

    def __init__(self, data_dir: Path | None) -> None:
        self._path = data_dir / LOCAL_TOKENS_FILE if data_dir else None
        saved = read_private_json(self._path, {}) if self._path else {}
        self._services: dict[str, str] = dict(saved.get("services", {}))
        self._proxies: dict[str, str] = dict(saved.get("proxies", {}))
        self._by_secret = {secret: proxy for proxy, secret in self._proxies.items()}

    def _save(self) -> None:
        if self._path is not None:
            write_private_json(self._path, {"services": self._services, "proxies": self._proxies})

    def service_token(self, service_id: str) -> str:
        return self._services.get(service_id, "")

    def set_service(self, service_id: str, secret: str) -> None:
        """Remember the token a service was registered with ("" forgets it)."""
        if self._services.get(service_id, "") == secret:
            return
        if secret:
            self._services[service_id] = secret
        else:
            self._services.pop(service_id, None)
        self._save()

    def drop_service(self, service_id: str) -> None:
        changed = self._services.pop(service_id, None) is not None
        secret = self._proxies.pop(service_id, None)
        if secret is not None:
            self._by_secret.pop(secret, None)
            changed = True
        if changed:
            self._save()

    def proxy_secret(self, proxy_id: str) -> str:
        """The managed proxy's own secret (made on first use, kept across agent restarts)."""
        secret = self._proxies.get(proxy_id)
        if secret is None:
            secret = self._proxies[proxy_id] = "proxy-" + secrets.token_hex(16)
            self._by_secret[secret] = proxy_id
            self._save()
        return secret

    def proxy_of(self, secret: str) -> str | None:
        return self._by_secret.get(secret)


Fetch = Callable[[str | None], Awaitable[dict[str, Any]]]


@dataclass
class _Cached:
    authz: Authorizer
    fetched: float


class RemoteAuthorizers:
    """A client agent's view: resolutions fetched from the servers, cached for token_ttl."""

    def __init__(self, fetch: Fetch, config: AclConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch
        self.config = config
        self.clock = clock
        self._cache: dict[str | None, _Cached] = {}
        self._refreshing: set[str | None] = set()

    async def authorizer(self, secret: str | None) -> Authorizer:
        cached = self._cache.get(secret)
        now = self.clock()
        if cached is not None and now - cached.fetched < self.config.token_ttl and not _expired(cached.authz):
            return cached.authz
        if cached is not None and self.config.down_policy == "async-cache" and not _expired(cached.authz):
            self._refresh_behind(secret)
            return cached.authz
        try:
            return await self._fetch(secret)
        except Unavailable as exc:
            return self._while_down(secret, cached, exc)

    async def _fetch(self, secret: str | None) -> Authorizer:
        try:
            body = await self.fetch(secret)
        except PermissionDenied:
            self._cache.pop(secret, None)  # deleted or expired: stop using what we cached
            raise
        authz = authorizer_from_resolution(body, default=self.config.default_policy)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[secret] = _Cached(authz, self.clock())
        return authz

    def _refresh_behind(self, secret: str | None) -> None:
        if secret in self._refreshing:
            return
        self._refreshing.add(secret)

        async def refresh() -> None:
            try:
                await self._fetch(secret)
            except (Unavailable, PermissionDenied) as exc:
                log.debug("background ACL refresh failed: %s", exc)
            finally:
                self._refreshing.discard(secret)

        asyncio.get_running_loop().create_task(refresh())

    def _while_down(self, secret: str | None, cached: _Cached | None, exc: Unavailable) -> Authorizer:
        policy = self.config.down_policy
        if policy == "allow":
            return allow_everything()
        if policy in ("extend-cache", "async-cache") and cached is not None and not _expired(cached.authz):
            log.warning("no server answers (%s); using a cached ACL resolution (down_policy %s)", exc, policy)
            return cached.authz
        log.warning("no server answers (%s); denying (down_policy %s, nothing cached for this token)", exc, policy)
        return compile_authorizer((), default=DENY)


def _expired(authz: Authorizer) -> bool:
    return authz.expires is not None and authz.expires <= datetime.now(timezone.utc)


def authorizer_from_resolution(body: dict[str, Any], *, default: str) -> Authorizer:
    """Compile the server's answer to /v1/internal/tether/acl/resolve."""
    if not body.get("Enabled", True):
        return allow_everything()
    try:
        rules = [Rule(str(a), str(b), bool(c), str(d), str(e)) for a, b, c, d, e in body["Rules"]]
        expires = parse_time(body["ExpirationTime"]) if body.get("ExpirationTime") else None
        return compile_authorizer(rules, default=default, management=bool(body["Management"]),
                                  accessor=str(body["AccessorID"]), expires=expires)
    except (KeyError, TypeError, ValueError) as exc:
        raise Unavailable(f"malformed ACL resolution from the server: {exc}") from None


class AgentAclResolver:
    """The agent's AclResolver (api/acl.py): proxy secrets and the recovery token first,
    then the servers' resolution (in-process in dev mode, cached over HTTP otherwise)."""

    def __init__(self, config: AclConfig, tokens: AgentTokens, local: LocalTokens,
                 backend: Callable[[str | None], Awaitable[Authorizer]], *, node: str) -> None:
        self.config = config
        self.tokens = tokens
        self.local = local
        self.backend = backend
        self.node = node

    def effective_secret(self, secret: str | None) -> str | None:
        """What a request's secret stands for at the servers: a proxy secret becomes its
        service's registration token; no token becomes the agent's default token."""
        if secret:
            proxy = self.local.proxy_of(secret)
            if proxy is None:
                return secret
            secret = self.local.service_token(proxy)
        return secret or self.tokens.get("default") or None

    async def resolve(self, secret: str | None) -> Authorizer:
        if not self.config.enabled:
            return allow_everything()
        recovery = self.tokens.get("agent_recovery")
        if secret and recovery and secrets.compare_digest(secret, recovery):
            return compile_authorizer((Rule("agent", self.node, False, WRITE, "agent recovery token"),
                                       Rule("node", "", True, READ, "agent recovery token")),
                                      default=DENY, accessor="agent-recovery")
        return await self.backend(self.effective_secret(secret))


__all__ = ["AgentAclResolver", "AgentTokens", "LocalTokens", "RemoteAuthorizers", "TOKEN_KINDS", "ACL_NOT_FOUND"]
