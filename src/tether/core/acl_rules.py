"""Consul's ACL rules language, HCL or JSON, parsed into `core.acl.Rule`s.

    service "web"        { policy = "write" }
    service_prefix ""    { policy = "read"  intentions = "read" }
    key_prefix "app/"    { policy = "list" }
    operator = "read"

is the same as the JSON `{"service": {"web": {"policy": "write"}}, "service_prefix": {"": ...},
"key_prefix": {...}, "operator": "read"}`. A document that starts with `{` is read as JSON,
anything else as HCL (core/hcl.py).

Every problem is reported with the line it is on and the word that is wrong (`line 3:
unknown rule type "servce"`), and nothing is accepted that would be ignored: Enterprise
rules (`namespace`, `partition`, Sentinel) and unknown attributes are refused by name.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tether.core.acl import ALLOWED_LEVELS, INTENTION, NAMED, READ, SINGLETONS, WRITE, DENY, Rule
from tether.core.errors import InvalidInput
from tether.core.hcl import parse_hcl

_ENTERPRISE = ("namespace", "namespace_prefix", "partition", "partition_prefix")
_ATTRIBUTES = {"policy", "intentions"}


def parse_rules(text: str, *, policy: str = "") -> tuple[Rule, ...]:
    """The rules of one policy document; InvalidInput naming the line and the word."""
    if not text.strip():
        return ()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"Failed to parse ACL rules: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    else:
        try:
            data = parse_hcl(text, source="Failed to parse ACL rules")
        except InvalidInput:
            raise
    if not isinstance(data, dict):
        raise InvalidInput("Failed to parse ACL rules: the document must be an object of rules")
    errors: list[str] = []
    rules = _rules(data, text, policy, errors)
    if errors:
        raise InvalidInput("Failed to parse ACL rules: " + "; ".join(errors[:5]))
    return tuple(rules)


def _rules(data: dict[str, Any], text: str, policy: str, errors: list[str]) -> list[Rule]:
    rules: list[Rule] = []
    for kind, value in data.items():
        where = _line_of(text, kind)
        if kind in SINGLETONS:
            level = value if isinstance(value, str) else None
            if level not in ALLOWED_LEVELS[kind]:
                errors.append(f'{where}invalid {kind} level {_show(value)}; use read, write or deny')
                continue
            rules.append(Rule(kind, "", False, level, policy))
            continue
        resource, prefix = (kind[: -len("_prefix")], True) if kind.endswith("_prefix") else (kind, False)
        if kind in _ENTERPRISE:
            errors.append(f'{where}"{kind}" rules are a Consul Enterprise feature; Tether has no namespaces '
                          "or partitions in ACLs")
            continue
        if resource not in NAMED:
            errors.append(f'{where}unknown rule type "{kind}"')
            continue
        for name, body in _segments(kind, value, text, errors):
            rules.extend(_segment_rules(resource, prefix, kind, name, body, text, policy, errors))
    return rules


def _segments(kind: str, value: Any, text: str, errors: list[str]) -> list[tuple[str, Any]]:
    """{"name": body} (or a JSON list of such objects) -> [(name, body)]."""
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            errors.append(f'{_line_of(text, kind)}{kind} must be a block: {kind} "<name>" {{ policy = "read" }}')
            continue
        out.extend(item.items())
    return out


def _segment_rules(resource: str, prefix: bool, kind: str, name: str, body: Any, text: str, policy: str,
                   errors: list[str]) -> list[Rule]:
    where = _line_of(text, f'{kind} "{name}"') or _line_of(text, kind)
    label = f'{kind} "{name}"'
    if not isinstance(body, dict):
        errors.append(f"{where}{label} must be a block with a policy")
        return []
    unknown = sorted(set(body) - _ATTRIBUTES)
    for attr in unknown:
        hint = " (Sentinel policies are Enterprise-only)" if attr.startswith("sentinel") else ""
        errors.append(f'{where}{label}: unknown attribute "{attr}"{hint}')
    if "intentions" in body and resource != "service":
        errors.append(f'{where}{label}: "intentions" is only valid on service rules')
    out: list[Rule] = []
    level = body.get("policy")
    if level is None and "intentions" not in body:
        errors.append(f'{where}{label}: missing policy (read, write or deny)')
    elif level is not None:
        if level not in ALLOWED_LEVELS[resource]:
            allowed = ", ".join(ALLOWED_LEVELS[resource])
            errors.append(f"{where}{label}: invalid policy {_show(level)}; use {allowed}")
        else:
            out.append(Rule(resource, name, prefix, level, policy))
    if resource == "service":
        intentions = body.get("intentions")
        if intentions is None:  # Consul: service read or write implies intentions read
            intentions = READ if level in (READ, WRITE) else DENY
        elif intentions not in ALLOWED_LEVELS[INTENTION]:
            errors.append(f"{where}{label}: invalid intentions {_show(intentions)}; use read, write or deny")
            return out
        out.append(Rule(INTENTION, name, prefix, intentions, policy))
    return out


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _line_of(text: str, word: str) -> str:
    """'line N: ' for the first line where `word` appears as a token (JSON or HCL), else ''."""
    bare = word.split(" ", 1)
    pattern = re.escape(bare[0]) if len(bare) == 1 else re.escape(bare[0]) + r'"?\s*[:{]?\s*' + re.escape(bare[1])
    found = re.search(r'(^|[\s{,"])' + pattern + r'($|[\s"=:{])', text, re.MULTILINE)
    if not found:
        return ""
    return f"line {text.count(chr(10), 0, found.end(1)) + 1}: "


def format_rules_for_identity(lines: list[tuple[str, str, str]]) -> str:
    """HCL text for synthesized policies: [(kind, name, level)] -> `kind "name" { policy = "level" }`."""
    return "\n".join(f'{kind} "{name}" {{\n  policy = "{level}"\n}}' for kind, name, level in lines) + "\n"
