"""The ACL decision: may this token do `access` on `resource` "name"? Consul's semantics.

    authz = compile_authorizer([Rule("service", "web", False, WRITE, "web-policy")], default=DENY)
    authz.allowed("service", "web", WRITE)        -> True
    authz.explain("service", "db", READ)          -> AclDecision(False, None, 'default policy "deny"')

A token's rules come from its policies, roles and identities (core/acl_model.py), parsed
from Consul's rules language (core/acl_rules.py). The decision, in Consul's order:

  1. A management token may do everything.
  2. The rule for the resource: for named resources (service, node, key, agent, session,
     event, query and the intentions derived from service rules) the *exact* rule for the
     name, else the *longest prefix* rule that matches it; for the singletons (acl,
     operator, mesh, peering, keyring) the one rule, where `mesh` and `peering` fall back
     to `operator` as in Consul.
  3. A rule that exists decides: `write` grants read, list and write; `list` grants read
     and list; `read` grants read; `deny` grants nothing. A rule that matches but grants
     less than asked *denies*: it never falls through to the default.
  4. No rule: the default policy (acl.default_policy) decides, except that the `acl`
     resource itself needs a rule or management even under `allow` (as Consul's allow-all
     authorizer refuses ACL management).

Several policies on one token merge per (resource, name, exact|prefix): `deny` wins, else
the widest grant. `intentions` on a service rule defaults to `read` when the rule's policy
is read or write, and to `deny` otherwise. The name `*` for intentions means "every
intention": reading it needs some rule granting read; writing it needs every rule, and
a `""` prefix rule, to grant write (Consul's anyAllowed / allAllowed).

`allowed` is the fast path (a dict lookup and a scan of prefixes, longest first);
`explain` records every rule it considered; tests/core/test_acl.py holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tether.core.errors import InvalidInput

DENY, READ, LIST, WRITE = "deny", "read", "list", "write"
ALLOW = "allow"  # a default policy, not a rule level
LEVELS = (READ, LIST, WRITE, DENY)

#: Resources named by a segment; each has an exact form and a `<resource>_prefix` form.
NAMED = ("agent", "event", "key", "node", "query", "service", "session")
#: The resource derived from service rules' `intentions` attribute.
INTENTION = "intention"
#: Resources with one rule each (`operator = "read"`).
SINGLETONS = ("acl", "keyring", "mesh", "operator", "peering")
#: Levels a rule of each kind may carry (Consul refuses `list` outside key rules).
ALLOWED_LEVELS = {**{r: (READ, WRITE, DENY) for r in NAMED + SINGLETONS + (INTENTION,)}, "key": LEVELS}
_FALLBACK = {"mesh": "operator", "peering": "operator"}
#: What each rule level grants.
_GRANTS = {WRITE: frozenset((READ, LIST, WRITE)), LIST: frozenset((READ, LIST)), READ: frozenset((READ,)),
           DENY: frozenset()}
#: Merge order: deny beats everything, then the widest grant.
_STRENGTH = {DENY: 4, WRITE: 3, LIST: 2, READ: 1}


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of a policy: `service_prefix "web" { policy = "read" }` from policy "p"."""

    resource: str  # one of NAMED, SINGLETONS or INTENTION
    name: str  # the segment ("" for singletons)
    prefix: bool
    access: str  # one of LEVELS
    policy: str = ""  # where it came from, for explanations

    def describe(self) -> str:
        origin = f' (policy "{self.policy}")' if self.policy else ""
        if self.resource in SINGLETONS:
            return f'{self.resource} = "{self.access}"{origin}'
        kind = "service" if self.resource == INTENTION else self.resource
        attribute = "intentions" if self.resource == INTENTION else "policy"
        suffix = "_prefix" if self.prefix else ""
        return f'{kind}{suffix} "{self.name}" {{ {attribute} = "{self.access}" }}{origin}'


@dataclass(frozen=True, slots=True)
class AclDecision:
    allowed: bool
    rule: Rule | None  # the rule that decided; None for management or the default
    reason: str
    considered: tuple[Rule, ...] = ()


def merge_rules(rules: Iterable[Rule]) -> dict[tuple[str, str, bool], Rule]:
    """One rule per (resource, name, prefix): deny wins, else the widest grant."""
    merged: dict[tuple[str, str, bool], Rule] = {}
    for rule in rules:
        key = (rule.resource, rule.name, rule.prefix)
        old = merged.get(key)
        if old is None or _STRENGTH[rule.access] > _STRENGTH[old.access]:
            merged[key] = rule
    return merged


@dataclass
class Authorizer:
    """A token's compiled rules plus the default policy. Immutable once built."""

    default: str = DENY  # acl.default_policy: allow | deny
    management: bool = False
    accessor: str = ""
    expires: Any = None  # datetime after which the token no longer resolves (None: never)
    _exact: dict[str, dict[str, Rule]] = field(default_factory=dict)
    _prefixes: dict[str, list[Rule]] = field(default_factory=dict)  # longest first
    _single: dict[str, Rule] = field(default_factory=dict)

    # -- the fast path ------------------------------------------------------------------

    def allowed(self, resource: str, name: str, access: str) -> bool:
        if self.management:
            return True
        rule = self._find(resource, name)
        if rule is None:
            if resource == INTENTION and name == "*":
                return self._wildcard_intention(access)[0]
            return self._default_allows(resource)
        return access in _GRANTS[rule.access]

    def _find(self, resource: str, name: str) -> Rule | None:
        if resource in SINGLETONS:
            rule = self._single.get(resource)
            if rule is None and resource in _FALLBACK:
                return self._single.get(_FALLBACK[resource])
            return rule
        if resource == INTENTION and name == "*":
            return None  # decided over all rules: _wildcard_intention
        exact = self._exact.get(resource)
        if exact is not None and name in exact:
            return exact[name]
        for rule in self._prefixes.get(resource, ()):
            if name.startswith(rule.name):
                return rule
        return None

    def _default_allows(self, resource: str) -> bool:
        return self.default == ALLOW and resource != "acl"

    def _wildcard_intention(self, access: str) -> tuple[bool, Rule | None, str]:
        """Consul's anyAllowed (read) / allAllowed (write) over the intention rules."""
        rules = [*self._exact.get(INTENTION, {}).values(), *self._prefixes.get(INTENTION, ())]
        catch_all = next((r for r in self._prefixes.get(INTENTION, ()) if r.name == ""), None)
        if access == WRITE:
            if catch_all is None:
                if rules:
                    return False, rules[0], "writing every intention needs a \"\" prefix rule granting write"
                return self._default_allows(INTENTION), None, self._default_reason()
            denier = next((r for r in rules if WRITE not in _GRANTS[r.access]), None)
            if denier is not None:
                return False, denier, "writing every intention needs every intention rule to grant write"
            return True, catch_all, "every intention rule grants write"
        granting = next((r for r in rules if access in _GRANTS[r.access]), None)
        if granting is not None:
            return True, granting, f"a rule grants {access} on some intentions"
        if catch_all is not None:
            return False, catch_all, f"no rule grants {access} on any intention"
        if rules:
            return False, rules[0], f"no rule grants {access} on any intention"
        return self._default_allows(INTENTION), None, self._default_reason()

    def _default_reason(self) -> str:
        return f'no rule matched; default policy "{self.default}"'

    # -- the explain path -----------------------------------------------------------------

    def explain(self, resource: str, name: str, access: str) -> AclDecision:
        """The same decision as `allowed`, with the rule that made it and those considered."""
        if self.management:
            return AclDecision(True, None, "management token: every permission")
        if resource == INTENTION and name == "*":
            allowed, rule, why = self._wildcard_intention(access)
            return AclDecision(allowed, rule, why)
        considered: list[Rule] = []
        chosen: Rule | None = None
        if resource in SINGLETONS:
            for candidate in (resource, _FALLBACK.get(resource)):
                rule = self._single.get(candidate) if candidate else None
                if rule is not None:
                    considered.append(rule)
                    chosen = chosen or rule
                    break
        else:
            exact = self._exact.get(resource, {}).get(name)
            matching = [r for r in self._prefixes.get(resource, ()) if name.startswith(r.name)]
            considered = ([exact] if exact else []) + matching
            chosen = exact or (max(matching, key=lambda r: len(r.name)) if matching else None)
        if chosen is None:
            allowed = self._default_allows(resource)
            why = self._default_reason()
            if resource == "acl" and self.default == ALLOW:
                why = "no rule matched; ACL management needs an acl rule or a management token"
            return AclDecision(allowed, None, why, tuple(considered))
        allowed = access in _GRANTS[chosen.access]
        kind = "exact" if not chosen.prefix else "longest prefix"
        verb = "grants" if allowed else "does not grant"
        return AclDecision(allowed, chosen, f"{kind} rule {chosen.describe()} {verb} {access}", tuple(considered))

    # -- Consul's "any" / "all" checks for whole resource kinds ---------------------------

    def allowed_all(self, resource: str, access: str) -> bool:
        """Every name of `resource` (e.g. reading every node): a "" prefix rule granting it and
        no rule granting less, or no rules at all under a default that allows."""
        if self.management:
            return True
        rules = [*self._exact.get(resource, {}).values(), *self._prefixes.get(resource, ())]
        if any(access not in _GRANTS[r.access] for r in rules):
            return False
        if any(r.name == "" for r in self._prefixes.get(resource, ())):
            return True
        return self._default_allows(resource)

    def allowed_key_prefix_write(self, prefix: str) -> bool:
        """Deleting a KV tree: write on the prefix and no rule under it granting less."""
        if self.management:
            return True
        under = [r for r in self._prefixes.get("key", ()) if r.name.startswith(prefix)]
        under += [r for n, r in self._exact.get("key", {}).items() if n.startswith(prefix)]
        if any(WRITE not in _GRANTS[r.access] for r in under):
            return False
        covering = next((r for r in self._prefixes.get("key", ()) if prefix.startswith(r.name)), None)
        if covering is not None:
            return WRITE in _GRANTS[covering.access]
        return self._default_allows("key")


def compile_authorizer(rules: Iterable[Rule], *, default: str, management: bool = False,
                       accessor: str = "", expires: Any = None) -> Authorizer:
    """Merge and index `rules` for fast decisions."""
    if default not in (ALLOW, DENY):
        raise InvalidInput(f"default policy must be allow or deny, not {default!r}")
    authz = Authorizer(default=default, management=management, accessor=accessor, expires=expires)
    for rule in merge_rules(rules).values():
        if rule.resource in SINGLETONS:
            authz._single[rule.resource] = rule
        elif rule.prefix:
            authz._prefixes.setdefault(rule.resource, []).append(rule)
        else:
            authz._exact.setdefault(rule.resource, {})[rule.name] = rule
    for prefixes in authz._prefixes.values():
        prefixes.sort(key=lambda r: len(r.name), reverse=True)
    return authz


def allow_everything(accessor: str = "") -> Authorizer:
    """ACLs off: every request may do everything (Consul's behaviour with acl.enabled false)."""
    return Authorizer(default=ALLOW, management=True, accessor=accessor)


def format_permission(resource: str, access: str) -> str:
    """Consul's spelling of a permission in messages: 'service:write', 'intentions:read'."""
    return f"{'intentions' if resource == INTENTION else resource}:{access}"
