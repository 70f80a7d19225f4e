"""The ACL decision (core/acl.py) and the rules language (core/acl_rules.py).

Table rows cite the Consul behaviour they encode (Consul docs "ACL rules", and its
acl/policy_authorizer.go semantics); hypothesis holds the fast path, the explain path and
a plain reference model equal on random rule sets.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.acl import (
    ALLOW, DENY, INTENTION, LIST, READ, WRITE, Rule, compile_authorizer, merge_rules,
)
from tether.core.acl_rules import parse_rules
from tether.core.errors import InvalidInput


def authz(text: str, default: str = DENY, management: bool = False):
    return compile_authorizer(parse_rules(text, policy="p"), default=default, management=management)


# (rules, default, resource, name, access, allowed, why) -------------------------------------
TABLE = [
    # exact beats prefix, whatever their order or length
    ('key "foo/bar" { policy = "deny" }\nkey_prefix "foo/" { policy = "write" }', DENY, "key", "foo/bar", READ,
     False, "exact deny beats a covering prefix write"),
    ('key "foo/bar" { policy = "deny" }\nkey_prefix "foo/" { policy = "write" }', DENY, "key", "foo/baz", WRITE,
     True, "the prefix applies to the other keys"),
    ('service "web" { policy = "read" }\nservice_prefix "w" { policy = "write" }', DENY, "service", "web", WRITE,
     False, "an exact rule is not widened by a prefix rule"),
    # the longest prefix wins
    ('key_prefix "" { policy = "read" }\nkey_prefix "app/" { policy = "write" }', DENY, "key", "app/x", WRITE,
     True, "longer prefix grants write"),
    ('key_prefix "" { policy = "read" }\nkey_prefix "app/" { policy = "write" }', DENY, "key", "other", WRITE,
     False, "only the catch-all applies: read"),
    ('key_prefix "" { policy = "write" }\nkey_prefix "secret/" { policy = "deny" }', ALLOW, "key", "secret/a",
     READ, False, "a longer deny prefix beats a shorter write"),
    # a matching rule that grants too little denies; it never falls through to an allow default
    ('service_prefix "" { policy = "read" }', ALLOW, "service", "web", WRITE, False,
     "rule matched: read does not grant write, default allow is not consulted"),
    ('service_prefix "" { policy = "read" }', ALLOW, "node", "n1", WRITE, True, "no node rule: default allow"),
    ('service_prefix "" { policy = "read" }', DENY, "node", "n1", READ, False, "no node rule: default deny"),
    # levels
    ('key_prefix "" { policy = "list" }', DENY, "key", "a", LIST, True, "list grants list"),
    ('key_prefix "" { policy = "list" }', DENY, "key", "a", READ, True, "list grants read"),
    ('key_prefix "" { policy = "list" }', DENY, "key", "a", WRITE, False, "list does not grant write"),
    ('key_prefix "" { policy = "read" }', DENY, "key", "a", LIST, False, "read does not grant list"),
    ('key_prefix "" { policy = "write" }', DENY, "key", "a", LIST, True, "write grants list"),
    # intentions derived from service rules
    ('service "db" { policy = "read" }', DENY, INTENTION, "db", READ, True, "service read implies intentions read"),
    ('service "db" { policy = "write" }', DENY, INTENTION, "db", WRITE, False, "service write: intentions read only"),
    ('service "db" { policy = "deny" }', ALLOW, INTENTION, "db", READ, False, "service deny: intentions deny"),
    ('service "db" { policy = "read"\n intentions = "write" }', DENY, INTENTION, "db", WRITE, True,
     "explicit intentions level"),
    ('service_prefix "" { intentions = "read" }', DENY, "service", "db", READ, False,
     "an intentions-only rule grants no service access"),
    # the wildcard intention name "*": read needs any rule granting read, write needs all
    ('service "db" { policy = "read" }', DENY, INTENTION, "*", READ, True, "anyAllowed"),
    ('service "db" { policy = "read"\n intentions = "write" }', DENY, INTENTION, "*", WRITE, False,
     "allAllowed needs a catch-all prefix granting write"),
    ('service_prefix "" { policy = "read"\n intentions = "write" }', DENY, INTENTION, "*", WRITE, True,
     "catch-all write"),
    ('service_prefix "" { policy = "read"\n intentions = "write" }\nservice "x" { policy = "read" }', DENY,
     INTENTION, "*", WRITE, False, "one rule granting less breaks allAllowed"),
    # singletons, and mesh/peering falling back to operator
    ('operator = "write"', DENY, "mesh", "", WRITE, True, "mesh falls back to operator"),
    ('operator = "write"\nmesh = "read"', DENY, "mesh", "", WRITE, False, "a mesh rule beats the operator fallback"),
    ('operator = "read"', DENY, "peering", "", READ, True, "peering falls back to operator"),
    ('operator = "read"', DENY, "operator", "", WRITE, False, "read is not write"),
    ('acl = "read"', DENY, "acl", "", READ, True, "acl rule"),
    ("", ALLOW, "acl", "", READ, False, "ACL management needs a rule even under default allow"),
    ("", ALLOW, "operator", "", WRITE, True, "everything else follows default allow"),
]


@pytest.mark.parametrize("rules,default,resource,name,access,allowed,why", TABLE)
def test_consul_precedence_table(rules, default, resource, name, access, allowed, why):
    a = authz(rules, default)
    assert a.allowed(resource, name, access) is allowed, why
    assert a.explain(resource, name, access).allowed is allowed, why


def test_management_may_do_everything_even_with_deny_rules():
    a = authz('service_prefix "" { policy = "deny" }', DENY, management=True)
    assert a.allowed("service", "db", WRITE) and a.allowed("acl", "", WRITE) and a.allowed(INTENTION, "*", WRITE)
    assert a.explain("key", "x", WRITE).reason.startswith("management")


def test_policies_merge_deny_wins_else_widest():
    rules = [Rule("service", "web", False, READ, "a"), Rule("service", "web", False, WRITE, "b")]
    assert merge_rules(rules)[("service", "web", False)].access == WRITE
    rules.append(Rule("service", "web", False, DENY, "c"))
    merged = merge_rules(rules)[("service", "web", False)]
    assert (merged.access, merged.policy) == (DENY, "c")


def test_explain_names_the_rule_that_decided():
    a = authz('service_prefix "" { policy = "read" }\nservice "web" { policy = "write" }')
    decision = a.explain("service", "web", WRITE)
    assert decision.allowed and decision.rule.name == "web" and 'service "web"' in decision.reason
    decision = a.explain("service", "db", WRITE)
    assert not decision.allowed and 'service_prefix ""' in decision.reason and "does not grant write" in decision.reason
    assert "default policy" in a.explain("node", "n1", READ).reason


def test_key_tree_delete_needs_write_on_everything_under_it():
    a = authz('key_prefix "app/" { policy = "write" }\nkey "app/locked" { policy = "read" }')
    assert not a.allowed_key_prefix_write("app/")
    assert a.allowed_key_prefix_write("app/x/")
    assert not authz('key_prefix "" { policy = "read" }').allowed_key_prefix_write("a/")


def test_allowed_all_reads_every_name():
    assert authz('node_prefix "" { policy = "read" }').allowed_all("node", READ)
    assert not authz('node_prefix "" { policy = "read" }\nnode "x" { policy = "deny" }').allowed_all("node", READ)
    assert not authz('node "x" { policy = "read" }').allowed_all("node", READ)


# -- the rules language --------------------------------------------------------------------

def test_hcl_and_json_rules_mean_the_same():
    hcl = 'service "web" { policy = "write" }\nkey_prefix "" { policy = "read" }\noperator = "read"'
    json_text = '{"service": {"web": {"policy": "write"}}, "key_prefix": {"": {"policy": "read"}}, "operator": "read"}'
    assert set(parse_rules(hcl)) == set(parse_rules(json_text))


@pytest.mark.parametrize("text,line,word", [
    ('service "web" { policy = "write" }\nservce "db" { policy = "read" }', 2, "servce"),
    ('service "web" {\n  policy = "wrte"\n}', 1, "wrte"),
    ('operator = "list"', 1, "list"),
    ('key "a" {\n  policy = "read"\n  polcy = "x"\n}', 1, "polcy"),
    ('service "web" { policy = }', 1, "}"),
    ('namespace "n" { policy = "read" }', 1, "namespace"),
    ('node "n" { policy = "read" intentions = "read" }', 1, "intentions"),
])
def test_malformed_rules_name_the_line_and_the_word(text, line, word):
    with pytest.raises(InvalidInput) as info:
        parse_rules(text)
    assert f"line {line}" in info.value.message and word in info.value.message, info.value.message


# -- hypothesis: fast == explain == a reference model ------------------------------------------

NAMES = st.sampled_from(["", "a", "ab", "abc", "b", "ba"])
RULES = st.lists(st.builds(Rule, st.just("service"), NAMES, st.booleans(), st.sampled_from([READ, WRITE, DENY]),
                           st.sampled_from(["p1", "p2"])), max_size=8)


def reference(rules: list[Rule], name: str, access: str, default: str) -> bool:
    """Consul's semantics written plainly: merge, exact, else longest prefix, else default."""
    merged = merge_rules(rules)
    exact = merged.get(("service", name, False))
    prefixes = [r for (res, n, p), r in merged.items() if p and name.startswith(n)]
    rule = exact or (max(prefixes, key=lambda r: len(r.name)) if prefixes else None)
    if rule is None:
        return default == ALLOW
    grants = {WRITE: {READ, LIST, WRITE}, LIST: {READ, LIST}, READ: {READ}, DENY: set()}[rule.access]
    return access in grants


@settings(max_examples=400, deadline=None)
@given(RULES, NAMES, st.sampled_from([READ, WRITE]), st.sampled_from([ALLOW, DENY]), st.randoms())
def test_fast_path_explain_and_reference_agree(rules, name, access, default, rnd):
    a = compile_authorizer(rules, default=default)
    expected = reference(rules, name, access, default)
    assert a.allowed("service", name, access) is expected
    assert a.explain("service", name, access).allowed is expected
    shuffled = list(rules)
    rnd.shuffle(shuffled)
    assert compile_authorizer(shuffled, default=default).allowed("service", name, access) is expected


@settings(max_examples=200, deadline=None)
@given(RULES, NAMES)
def test_an_exact_rule_always_beats_any_prefix_rule(rules, name):
    exact = Rule("service", name, False, READ, "exact")
    a = compile_authorizer([r for r in rules if not (r.name == name and not r.prefix)] + [exact], default=ALLOW)
    assert a.allowed("service", name, READ) and not a.allowed("service", name, WRITE)
