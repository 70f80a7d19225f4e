"""ACL tokens, policies and roles in the Store, and the resolution of a secret to an Authorizer.

Key layout (docs/acl.md):

    acl/tokens/<accessor>          a token (Consul's shape, without indexes)
    acl/secrets/<sha256(secret)>   {"AccessorID"}: the lookup a request needs, unique by CAS
    acl/policies/<id>              a policy            acl/policy-names/<name>  {"ID"}
    acl/roles/<id>                 a role              acl/role-names/<name>    {"ID"}
    acl/bootstrap                  {"Done": true} once `PUT /v1/acl/bootstrap` ran

Every object and its name pointer are written in one transaction guarded by compare-and-
set, so two concurrent creates of one name cannot both succeed, and nothing is half-
written. Links from tokens and roles to policies and roles are stored by ID; names are
looked up when an object is shown, and links to deleted objects are dropped then (as
Consul does).

Resolution (`authorizer(secret)`) is a hash, two dict lookups and, when anything under
`acl/` changed since the last time this secret was seen, a recompilation of its rules:
a cached resolution costs microseconds (`make bench`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from tether.core.acl import ALLOW, DENY, Authorizer, Rule, allow_everything, compile_authorizer
from tether.core.agent_config import AclConfig
from tether.core.acl_model import (
    ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME, GLOBAL_READ_ONLY_ID,
    GLOBAL_READ_ONLY_NAME, GLOBAL_READ_ONLY_RULES, RESERVED_IDS, format_time, identity_rules, parse_policy_request,
    parse_role_request, parse_time, parse_token_request,
)
from tether.core.acl_rules import parse_rules
from tether.core.errors import AclDisabled, Conflict, InvalidInput, NotFound, PermissionDenied
from tether.store.base import Check, Delete, Op, Put, Store

log = logging.getLogger("tether.acl")

PREFIX = "acl/"
TOKENS = "acl/tokens/"
SECRETS = "acl/secrets/"
POLICIES = "acl/policies/"
POLICY_NAMES = "acl/policy-names/"
ROLES = "acl/roles/"
ROLE_NAMES = "acl/role-names/"
BOOTSTRAP = "acl/bootstrap"
#: A file in the data directory holding the reset index re-opens bootstrap (Consul's recovery).
BOOTSTRAP_RESET_FILE = "acl-bootstrap-reset"

ACL_NOT_FOUND = "ACL not found"
POLICY_NOT_FOUND = "ACL policy not found"
ROLE_NOT_FOUND = "ACL role not found"


def secret_key(secret: str) -> str:
    return SECRETS + hashlib.sha256(secret.encode()).hexdigest()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ACLService:
    def __init__(self, store: Store, config: AclConfig, *, datacenter: str, data_dir: Path | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.config = config
        self.datacenter = datacenter
        self.data_dir = data_dir
        self.clock = clock
        self._cache: dict[str, tuple[int, Authorizer]] = {}
        self._policy_rules: dict[tuple[str, int], tuple[Rule, ...]] = {}

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # -- start-up ----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the built-in policies, the anonymous token and the initial management token."""
        if not self.enabled:
            return
        for pid, name, rules, description in (
                (GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME, "", "Builtin Policy that grants unlimited access"),
                (GLOBAL_READ_ONLY_ID, GLOBAL_READ_ONLY_NAME, GLOBAL_READ_ONLY_RULES,
                 "Builtin Policy that grants unlimited read-only access to all components")):
            if self.store.get(POLICIES + pid) is None:
                doc = {"ID": pid, "Name": name, "Description": description, "Rules": rules, "Datacenters": []}
                await self._write_policy(doc, None)
        if self.store.get(TOKENS + ANONYMOUS_ACCESSOR) is None:
            await self._write_token({"AccessorID": ANONYMOUS_ACCESSOR, "SecretID": ANONYMOUS_SECRET,
                                     "Description": "Anonymous Token", "Local": False, "Policies": [],
                                     "Roles": [], "ServiceIdentities": [], "NodeIdentities": [],
                                     "TemplatedPolicies": [], "CreateTime": format_time(self.clock())}, None)
        secret = self.config.initial_management
        if secret and self.store.get(secret_key(secret)) is None:
            await self._write_token(self._management_token("Initial Management Token", secret), None,
                                    extra=[Put(BOOTSTRAP, {"Done": True})])
            log.info("created the initial management token from acl.tokens.initial_management")

    def _management_token(self, description: str, secret: str | None = None) -> dict[str, Any]:
        return {"AccessorID": str(uuid.uuid4()), "SecretID": secret or str(uuid.uuid4()),
                "Description": description, "Local": False,
                "Policies": [{"ID": GLOBAL_MANAGEMENT_ID}], "Roles": [], "ServiceIdentities": [],
                "NodeIdentities": [], "TemplatedPolicies": [], "CreateTime": format_time(self.clock())}

    # -- resolution --------------------------------------------------------------------

    async def resolve(self, secret: str | None) -> Authorizer:
        """The server's AclResolver (api/acl.py): no token means the default token, else anonymous."""
        return self.authorizer(secret or self.config.default or None)

    def authorizer(self, secret: str | None) -> Authorizer:
        """The Authorizer for a request's secret (None or "": the anonymous token).

        Raises PermissionDenied("ACL not found") for an unknown, deleted or expired token."""
        if not self.enabled:
            return allow_everything()
        secret = secret or ANONYMOUS_SECRET
        index = self.store.index([PREFIX])
        cached = self._cache.get(secret)
        if cached is not None and cached[0] == index and not self._expired_at(cached[1]):
            return cached[1]
        token = self.token_by_secret(secret)
        authz = self._compile(token)
        if len(self._cache) > 10_000:  # a bound against a flood of distinct secrets
            self._cache.clear()
        self._cache[secret] = (index, authz)
        return authz

    def _expired_at(self, authz: Authorizer) -> bool:
        return authz.expires is not None and authz.expires <= self.clock()

    def token_by_secret(self, secret: str) -> dict[str, Any]:
        pointer = self.store.get(secret_key(secret))
        entry = self.store.get(TOKENS + pointer.value["AccessorID"]) if pointer else None
        if entry is None or self._is_expired(entry.value):
            raise PermissionDenied(ACL_NOT_FOUND)
        return entry.value

    def _is_expired(self, token: dict[str, Any]) -> bool:
        when = token.get("ExpirationTime")
        return bool(when) and parse_time(when) <= self.clock()

    def token_rules(self, token: dict[str, Any]) -> tuple[bool, list[Rule]]:
        """(management?, rules) of a token: its policies, roles and identities, here."""
        rules: list[Rule] = []
        management = False
        policy_ids = [link["ID"] for link in token.get("Policies") or []]
        role_docs = [e.value for e in (self.store.get(ROLES + link["ID"]) for link in token.get("Roles") or []) if e]
        for role in role_docs:
            policy_ids += [link["ID"] for link in role.get("Policies") or []]
            rules += identity_rules(role, self.datacenter, f'role "{role["Name"]}"')
        for pid in policy_ids:
            entry = self.store.get(POLICIES + pid)
            if entry is None:
                continue  # a deleted policy: the link no longer grants anything
            policy = entry.value
            if policy.get("Datacenters") and self.datacenter not in policy["Datacenters"]:
                continue
            if pid == GLOBAL_MANAGEMENT_ID:
                management = True
            key = (pid, entry.modify_index)
            if key not in self._policy_rules:
                self._policy_rules[key] = parse_rules(policy["Rules"], policy=policy["Name"])
            rules += self._policy_rules[key]
        rules += identity_rules(token, self.datacenter, "token")
        return management, rules

    def _compile(self, token: dict[str, Any]) -> Authorizer:
        management, rules = self.token_rules(token)
        expires = parse_time(token["ExpirationTime"]) if token.get("ExpirationTime") else None
        return compile_authorizer(rules, default=self.config.default_policy, management=management,
                                  accessor=token["AccessorID"], expires=expires)

    # -- bootstrap ---------------------------------------------------------------------

    async def bootstrap(self, secret: str | None = None) -> dict[str, Any]:
        self._require_enabled()
        done = self.store.get(BOOTSTRAP)
        if done is not None and not self._reset_requested(done.modify_index):
            raise PermissionDenied(f"Permission denied: ACL bootstrap no longer allowed (reset index: "
                                   f"{done.modify_index})")
        token = self._management_token("Bootstrap Token (Global Management)", secret)
        checks = [Check(BOOTSTRAP, done.modify_index if done else 0)]
        await self._write_token(token, None, extra=[Put(BOOTSTRAP, {"Done": True})], checks=checks)
        if done is not None and self.data_dir is not None:
            (self.data_dir / BOOTSTRAP_RESET_FILE).unlink(missing_ok=True)
        log.info("ACL system bootstrapped: management token %s created", token["AccessorID"])
        return self.show_token(self.store.get(TOKENS + token["AccessorID"]), reveal=True)

    def _reset_requested(self, index: int) -> bool:
        if self.data_dir is None:
            return False
        path = self.data_dir / BOOTSTRAP_RESET_FILE
        try:
            return path.read_text().strip() == str(index)
        except OSError:
            return False

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise AclDisabled("ACL support disabled")

    # -- tokens -------------------------------------------------------------------------

    async def create_token(self, body: Any) -> dict[str, Any]:
        self._require_enabled()
        request = parse_token_request(body, now=self.clock())
        accessor = request.pop("AccessorID", None) or str(uuid.uuid4())
        secret = request.pop("SecretID", None) or str(uuid.uuid4())
        if accessor in RESERVED_IDS:
            raise InvalidInput(f"AccessorID: {accessor} is reserved")
        if self.store.get(TOKENS + accessor) is not None:
            raise InvalidInput(f"AccessorID: a token with AccessorID {accessor} exists already")
        if self.store.get(secret_key(secret)) is not None:
            raise InvalidInput("SecretID: a token with this SecretID exists already")
        token = {"AccessorID": accessor, "SecretID": secret, **self._linked(request),
                 "CreateTime": format_time(self.clock())}
        await self._write_token(token, None)
        return self.show_token(self.store.get(TOKENS + accessor), reveal=True)

    async def update_token(self, accessor: str, body: Any) -> dict[str, Any]:
        self._require_enabled()
        entry = self._token_entry(accessor)
        old = entry.value
        request = parse_token_request(body, now=self.clock())
        if request.get("AccessorID") not in (None, accessor):
            raise InvalidInput("AccessorID: the body's AccessorID differs from the one in the path")
        if request.get("SecretID") not in (None, old["SecretID"]):
            raise InvalidInput("SecretID: changing a token's SecretID is not permitted")
        if "ExpirationTime" in request and request["ExpirationTime"] != old.get("ExpirationTime"):
            raise InvalidInput("ExpirationTime: cannot change the expiration time of a token")
        request.pop("AccessorID", None)
        request.pop("SecretID", None)
        if accessor == ANONYMOUS_ACCESSOR and request.get("ExpirationTime"):
            raise InvalidInput("ExpirationTime: the anonymous token cannot expire")
        token = {**old, **self._linked(request)}
        if old.get("ExpirationTime"):
            token["ExpirationTime"] = old["ExpirationTime"]
        await self._write_token(token, entry.modify_index)
        return self.show_token(self.store.get(TOKENS + accessor), reveal=True)

    async def clone_token(self, accessor: str, description: str | None) -> dict[str, Any]:
        self._require_enabled()
        old = self._token_entry(accessor).value
        if accessor == ANONYMOUS_ACCESSOR:
            raise InvalidInput("the anonymous token cannot be cloned")
        token = {**old, "AccessorID": str(uuid.uuid4()), "SecretID": str(uuid.uuid4()),
                 "Description": old["Description"] if description is None else description,
                 "CreateTime": format_time(self.clock())}
        await self._write_token(token, None)
        return self.show_token(self.store.get(TOKENS + token["AccessorID"]), reveal=True)

    async def delete_token(self, accessor: str, *, caller_secret: str | None) -> None:
        self._require_enabled()
        entry = self._token_entry(accessor)
        if accessor == ANONYMOUS_ACCESSOR:
            raise InvalidInput("Delete operation not permitted on the anonymous token")
        if caller_secret and entry.value["SecretID"] == caller_secret:
            raise InvalidInput("Deletion of the request's authorization token is not permitted")
        await self.store.commit([Delete(TOKENS + accessor), Delete(secret_key(entry.value["SecretID"]))],
                                [Check(TOKENS + accessor, entry.modify_index)])

    def _token_entry(self, accessor: str):
        entry = self.store.get(TOKENS + _uuid_or(accessor, PermissionDenied(ACL_NOT_FOUND)))
        if entry is None or self._is_expired(entry.value):
            raise PermissionDenied(ACL_NOT_FOUND)  # Consul answers 403 for a token it cannot find
        return entry

    def read_token(self, accessor: str, *, reveal: bool) -> dict[str, Any]:
        return self.show_token(self._token_entry(accessor), reveal=reveal)

    def list_tokens(self, *, policy: str = "", role: str = "", service: str = "",
                    reveal: bool) -> list[dict[str, Any]]:
        out = []
        for entry in self.store.list(TOKENS):
            token = entry.value
            if self._is_expired(token):
                continue
            if policy and policy not in {link["ID"] for link in token.get("Policies") or []}:
                continue
            if role and role not in {link["ID"] for link in token.get("Roles") or []}:
                continue
            if service and service not in {i["ServiceName"] for i in token.get("ServiceIdentities") or []}:
                continue
            out.append(self.show_token(entry, reveal=reveal))
        return out

    def show_token(self, entry: Any, *, reveal: bool) -> dict[str, Any]:
        """Consul's token JSON: links with current names, empty lists left out, indexes added."""
        token = entry.value
        out: dict[str, Any] = {"AccessorID": token["AccessorID"],
                               "SecretID": token["SecretID"] if reveal else "<hidden>",
                               "Description": token["Description"]}
        policies = self._show_links(token.get("Policies") or [], POLICIES)
        roles = self._show_links(token.get("Roles") or [], ROLES)
        for field, value in (("Policies", policies), ("Roles", roles),
                             ("ServiceIdentities", token.get("ServiceIdentities")),
                             ("NodeIdentities", token.get("NodeIdentities")),
                             ("TemplatedPolicies", token.get("TemplatedPolicies"))):
            if value:
                out[field] = value
        out["Local"] = token.get("Local", False)
        if token.get("ExpirationTime"):
            out["ExpirationTime"] = token["ExpirationTime"]
        out["CreateTime"] = token.get("CreateTime", "")
        out["Hash"] = _hash(token, ("Description", "Policies", "Roles", "ServiceIdentities", "NodeIdentities",
                                    "TemplatedPolicies", "Local", "ExpirationTime"))
        out["CreateIndex"], out["ModifyIndex"] = entry.create_index, entry.modify_index
        return out

    def _show_links(self, links: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
        out = []
        for link in links:
            entry = self.store.get(prefix + link["ID"])
            if entry is not None:
                out.append({"ID": link["ID"], "Name": entry.value["Name"]})
        return out

    def _linked(self, request: dict[str, Any]) -> dict[str, Any]:
        """Resolve policy and role links (by ID or Name) to IDs; unknown ones are an error."""
        out = dict(request)
        out["Policies"] = self._resolve_links(request.get("Policies") or [], POLICIES, POLICY_NAMES, "policy")
        out["Roles"] = self._resolve_links(request.get("Roles") or [], ROLES, ROLE_NAMES, "role")
        return out

    def _resolve_links(self, links: list[dict[str, str]], prefix: str, names: str, what: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for link in links:
            if link.get("ID"):
                if self.store.get(prefix + link["ID"]) is None:
                    raise InvalidInput(f"cannot find {what} {link['ID']}")
                found = link["ID"]
            else:
                pointer = self.store.get(names + link["Name"])
                if pointer is None:
                    raise InvalidInput(f"cannot find {what} {link['Name']!r}")
                found = pointer.value["ID"]
            if all(found != o["ID"] for o in out):
                out.append({"ID": found})
        return out

    async def _write_token(self, token: dict[str, Any], modify_index: int | None, *, extra: list[Op] = (),
                           checks: list[Check] = ()) -> None:
        accessor = token["AccessorID"]
        guard = [Check(TOKENS + accessor, modify_index or 0)]
        ops: list[Op] = [Put(TOKENS + accessor, token)]
        if modify_index is None:
            guard.append(Check(secret_key(token["SecretID"]), 0))
            ops.append(Put(secret_key(token["SecretID"]), {"AccessorID": accessor}))
        try:
            await self.store.commit([*ops, *extra], [*guard, *checks])
        except Conflict:
            raise Conflict(f"token {accessor} was changed concurrently; retry") from None

    # -- policies ----------------------------------------------------------------------

    async def create_policy(self, body: Any) -> dict[str, Any]:
        self._require_enabled()
        doc = parse_policy_request(body)
        if doc.get("ID"):
            raise InvalidInput("ID: a new policy gets its ID from the server; leave it out")
        doc["ID"] = str(uuid.uuid4())
        await self._write_policy(doc, None)
        return self.show_policy(self.store.get(POLICIES + doc["ID"]))

    async def update_policy(self, policy_id: str, body: Any) -> dict[str, Any]:
        self._require_enabled()
        entry = self._policy_entry(policy_id)
        doc = parse_policy_request(body)
        if doc.get("ID") not in (None, policy_id):
            raise InvalidInput("ID: the body's ID differs from the one in the path")
        if policy_id == GLOBAL_MANAGEMENT_ID and doc["Rules"] != entry.value["Rules"]:
            raise InvalidInput("Changing the Rules for the builtin global-management policy is not permitted")
        doc["ID"] = policy_id
        await self._write_policy(doc, entry)
        return self.show_policy(self.store.get(POLICIES + policy_id))

    async def delete_policy(self, policy_id: str) -> None:
        self._require_enabled()
        entry = self._policy_entry(policy_id)
        if policy_id in (GLOBAL_MANAGEMENT_ID, GLOBAL_READ_ONLY_ID):
            raise InvalidInput(f"Delete of builtin {entry.value['Name']} policy not allowed")
        await self._delete_named(POLICY_NAMES, entry)

    def _policy_entry(self, policy_id: str):
        return self._named_entry(POLICIES, policy_id, POLICY_NOT_FOUND)

    def read_policy(self, policy_id: str) -> dict[str, Any]:
        return self.show_policy(self._policy_entry(policy_id))

    def read_policy_by_name(self, name: str) -> dict[str, Any]:
        return self.read_policy(self._id_of(POLICY_NAMES, name, POLICY_NOT_FOUND))

    def list_policies(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in self.show_policy(e).items() if k != "Rules"} for e in self.store.list(POLICIES)]

    def show_policy(self, entry: Any) -> dict[str, Any]:
        doc = entry.value
        out = {"ID": doc["ID"], "Name": doc["Name"], "Description": doc["Description"], "Rules": doc["Rules"]}
        if doc.get("Datacenters"):
            out["Datacenters"] = doc["Datacenters"]
        out["Hash"] = _hash(doc, ("Name", "Description", "Rules", "Datacenters"))
        out["CreateIndex"], out["ModifyIndex"] = entry.create_index, entry.modify_index
        return out

    async def _write_policy(self, doc: dict[str, Any], old: Any) -> None:
        await self._write_named(POLICIES, POLICY_NAMES, doc, old, "policy")

    def _named_entry(self, prefix: str, object_id: str, not_found: str):
        entry = self.store.get(prefix + _uuid_or(object_id, NotFound(not_found)))
        if entry is None:
            raise NotFound(not_found)
        return entry

    def _id_of(self, names: str, name: str, not_found: str) -> str:
        pointer = self.store.get(names + name)
        if pointer is None:
            raise NotFound(not_found)
        return pointer.value["ID"]

    async def _delete_named(self, names: str, entry: Any) -> None:
        """A policy or role and its name pointer, in one guarded transaction."""
        await self.store.commit([Delete(entry.key), Delete(names + entry.value["Name"])],
                                [Check(entry.key, entry.modify_index)])

    async def _write_named(self, prefix: str, names: str, doc: dict[str, Any], old: Any, what: str) -> None:
        """Write a policy or role and its name pointer in one guarded transaction."""
        ops: list[Op] = [Put(prefix + doc["ID"], doc)]
        checks = [Check(prefix + doc["ID"], old.modify_index if old else 0)]
        if old is None or old.value["Name"] != doc["Name"]:
            taken = self.store.get(names + doc["Name"])
            if taken is not None:
                raise InvalidInput(f"Invalid {what}: a {what} named {doc['Name']!r} already exists")
            ops.append(Put(names + doc["Name"], {"ID": doc["ID"]}))
            checks.append(Check(names + doc["Name"], 0))
            if old is not None:
                ops.append(Delete(names + old.value["Name"]))
        try:
            await self.store.commit(ops, checks)
        except Conflict:
            raise Conflict(f"{what} {doc['Name']!r} was changed concurrently; retry") from None

    # -- roles ----------------------------------------------------------------------------

    async def create_role(self, body: Any) -> dict[str, Any]:
        self._require_enabled()
        doc = self._linked_role(parse_role_request(body))
        if doc.get("ID"):
            raise InvalidInput("ID: a new role gets its ID from the server; leave it out")
        doc["ID"] = str(uuid.uuid4())
        await self._write_named(ROLES, ROLE_NAMES, doc, None, "role")
        return self.show_role(self.store.get(ROLES + doc["ID"]))

    async def update_role(self, role_id: str, body: Any) -> dict[str, Any]:
        self._require_enabled()
        entry = self._role_entry(role_id)
        doc = self._linked_role(parse_role_request(body))
        if doc.get("ID") not in (None, role_id):
            raise InvalidInput("ID: the body's ID differs from the one in the path")
        doc["ID"] = role_id
        await self._write_named(ROLES, ROLE_NAMES, doc, entry, "role")
        return self.show_role(self.store.get(ROLES + role_id))

    def _linked_role(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "Policies": self._resolve_links(doc.get("Policies") or [], POLICIES, POLICY_NAMES, "policy")}

    async def delete_role(self, role_id: str) -> None:
        self._require_enabled()
        entry = self._role_entry(role_id)
        await self._delete_named(ROLE_NAMES, entry)

    def _role_entry(self, role_id: str):
        return self._named_entry(ROLES, role_id, ROLE_NOT_FOUND)

    def read_role(self, role_id: str) -> dict[str, Any]:
        return self.show_role(self._role_entry(role_id))

    def read_role_by_name(self, name: str) -> dict[str, Any]:
        return self.read_role(self._id_of(ROLE_NAMES, name, ROLE_NOT_FOUND))

    def list_roles(self, *, policy: str = "") -> list[dict[str, Any]]:
        return [self.show_role(e) for e in self.store.list(ROLES)
                if not policy or policy in {link["ID"] for link in e.value.get("Policies") or []}]

    def show_role(self, entry: Any) -> dict[str, Any]:
        doc = entry.value
        out: dict[str, Any] = {"ID": doc["ID"], "Name": doc["Name"], "Description": doc["Description"]}
        policies = self._show_links(doc.get("Policies") or [], POLICIES)
        for field, value in (("Policies", policies), ("ServiceIdentities", doc.get("ServiceIdentities")),
                             ("NodeIdentities", doc.get("NodeIdentities")),
                             ("TemplatedPolicies", doc.get("TemplatedPolicies"))):
            if value:
                out[field] = value
        out["Hash"] = _hash(doc, ("Name", "Description", "Policies", "ServiceIdentities", "NodeIdentities",
                                  "TemplatedPolicies"))
        out["CreateIndex"], out["ModifyIndex"] = entry.create_index, entry.modify_index
        return out

    # -- housekeeping ------------------------------------------------------------------

    async def reap_expired(self) -> int:
        """Delete expired tokens (they already resolve as not found); return how many."""
        ops: list[Op] = []
        for entry in self.store.list(TOKENS):
            if self._is_expired(entry.value):
                ops += [Delete(entry.key), Delete(secret_key(entry.value["SecretID"]))]
        if ops:
            await self.store.commit(ops)
        return len(ops) // 2


def _uuid_or(value: str, error: Exception) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise error from None


def _hash(doc: dict[str, Any], fields: tuple[str, ...]) -> str:
    """Consul's Hash: a digest of the fields that define the object (base64), for change detection."""
    import base64
    import json

    digest = hashlib.sha256(json.dumps([doc.get(f) for f in fields], sort_keys=True).encode()).digest()
    return base64.b64encode(digest).decode()


__all__ = ["ACLService", "AclConfig", "ACL_NOT_FOUND", "DENY", "ALLOW", "secret_key"]
