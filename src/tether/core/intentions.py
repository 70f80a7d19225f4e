"""Intentions: Consul's service-to-service allow/deny rules, with Consul's precedence.

An intention says "source service -> destination service: allow|deny" over logical
names; either name may be the wildcard `*` (the whole name, never a part of one). Each
side has a namespace (Consul's SourceNS / DestinationNS, `default` when not given, see
core/namespaces.py); a namespace may be `*` only with the name `*` (Consul's rule), and
an intention naming namespace X never matches a service of another namespace.
This module holds the model, its validation (Consul's limits), precedence, matching
and the Consul JSON shape. The per-connection decision that combines intentions with
server policy lives in core/authz.py; the store keeps intentions and assigns IDs and
indexes.

Precedence is Consul's (agent/structs/intention.go, docs "Precedence and match order"):
destination specificity counts before source specificity; a side is exact (ns/name),
name-wildcard (ns/*) or all-wildcard (*/*):

    9  ns/a -> ns/b    8  ns/* -> ns/b    7  */* -> ns/b
    6  ns/a -> ns/*    5  ns/* -> ns/*    4  */* -> ns/*
    3  ns/a -> */*     2  ns/* -> */*     1  */* -> */*

Intentions in the default namespace only (all of Consul CE's) use 9, 8, 6 and 5.
Higher wins; at equal precedence deny wins over allow.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from tether.core.errors import InvalidInput
from tether.core.spiffe import DEFAULT_NAMESPACE, validate_namespace, validate_service_name

WILDCARD = "*"
ALLOW: Literal["allow"] = "allow"
DENY: Literal["deny"] = "deny"
ACTIONS = (ALLOW, DENY)
SOURCE_TYPE_CONSUL = "consul"

# Consul's limits for opaque values (agent/structs: metaMaxKeyPairs & co.), kept so that
# anything Consul accepts Tether accepts, and nothing unbounded reaches the store.
META_MAX_PAIRS = 64
META_KEY_MAX_LENGTH = 128
META_VALUE_MAX_LENGTH = 512
DESCRIPTION_MAX_LENGTH = 512

Action = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True)
class Intention:
    """One intention. Construction validates; `precedence` is computed, never given.

    `id`, `create_index` and `modify_index` are assigned by the store, so they are
    optional here. Meta is copied into a read-only mapping.
    """

    source_name: str
    destination_name: str
    action: Action
    description: str = field(default="", hash=False)
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)
    id: str | None = None
    source_type: str = SOURCE_TYPE_CONSUL
    create_index: int | None = field(default=None, compare=False, hash=False)
    modify_index: int | None = field(default=None, compare=False, hash=False)
    source_ns: str = DEFAULT_NAMESPACE
    destination_ns: str = DEFAULT_NAMESPACE
    precedence: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        problems = intention_problems(self)
        if problems:
            raise InvalidInput(f"intention {self.source_name!r} -> {self.destination_name!r}: " + "; ".join(problems))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        object.__setattr__(self, "precedence", compute_precedence(
            self.source_name, self.destination_name, self.source_ns, self.destination_ns))

    @property
    def key(self) -> str:
        return intention_key(self.source_name, self.destination_name, self.source_ns, self.destination_ns)

    @property
    def source(self) -> str:
        """`name`, or `ns/name` outside the default namespace (how Consul prints it)."""
        return qualified(self.source_ns, self.source_name)

    @property
    def destination(self) -> str:
        return qualified(self.destination_ns, self.destination_name)

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination} ({self.action}, precedence {self.precedence})"


def qualified(namespace: str, name: str) -> str:
    """`name` in the default namespace, else `namespace/name` (Consul's `ns/name` form)."""
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


def split_qualified(text: str) -> tuple[str, str]:
    """(namespace, name) from `name` or `ns/name` (the exact and check query parameters)."""
    ns, sep, name = text.rpartition("/")
    return (ns, name) if sep else (DEFAULT_NAMESPACE, text)


def intention_key(source: str, destination: str, source_ns: str = DEFAULT_NAMESPACE,
                  destination_ns: str = DEFAULT_NAMESPACE) -> str:
    """The identity of an intention: at most one may exist per (source, destination).

    The store uses it to refuse a duplicate (Conflict). Names and namespaces never contain
    '/', so `<source>/<destination>` (both in `default`, the form stored before namespaces)
    and `<ns>/<source>/<ns>/<destination>` are unambiguous and safe inside store keys.
    """
    if source_ns == destination_ns == DEFAULT_NAMESPACE:
        return f"{source}/{destination}"
    return f"{source_ns}/{source}/{destination_ns}/{destination}"


def compute_precedence(source: str, destination: str, source_ns: str = DEFAULT_NAMESPACE,
                       destination_ns: str = DEFAULT_NAMESPACE) -> int:
    """Consul's precedence: 9/6/3 for 2/1/0 exact destination parts (namespace, name),
    minus (2 - exact source parts). A `*` namespace comes only with a `*` name."""
    dst_exact = (destination_ns != WILDCARD) + (destination != WILDCARD)
    src_exact = (source_ns != WILDCARD) + (source != WILDCARD)
    return {2: 9, 1: 6, 0: 3}[dst_exact] - (2 - src_exact)


def match_intention(intention: Intention, source: str, destination: str, source_ns: str = DEFAULT_NAMESPACE,
                    destination_ns: str = DEFAULT_NAMESPACE) -> bool:
    """True when `intention` applies to a connection from service `source` to `destination`
    (each in its namespace)."""
    return (intention.source_ns in (WILDCARD, source_ns) and intention.source_name in (WILDCARD, source)
            and intention.destination_ns in (WILDCARD, destination_ns)
            and intention.destination_name in (WILDCARD, destination))


def sort_key(intention: Intention) -> tuple[Any, ...]:
    """Evaluation order: precedence high to low, deny before allow, then Consul's lexical tie-break.

    The last parts only make the order total (so it never depends on input order).
    """
    return (
        -intention.precedence,
        intention.action != DENY,
        intention.source_ns,
        intention.source_name,
        intention.destination_ns,
        intention.destination_name,
        intention.id or "",
        intention.description,
    )


def intention_problems(i: Intention) -> list[str]:
    """Every reason `i` is invalid (empty when valid), each naming the field."""
    problems: list[str] = []
    for name, value in (("SourceName", i.source_name), ("DestinationName", i.destination_name)):
        problems.extend(_name_problems(name, value))
    for name, ns, svc in (("SourceNS", i.source_ns, i.source_name), ("DestinationNS", i.destination_ns, i.destination_name)):
        problems.extend(_namespace_problems(name, ns, svc))
    if i.action not in ACTIONS:
        problems.append(f"Action {i.action!r} must be 'allow' or 'deny'")
    if i.source_type != SOURCE_TYPE_CONSUL:
        problems.append(f"SourceType {i.source_type!r} must be 'consul'")
    if not isinstance(i.description, str):
        problems.append("Description must be a string")
    elif len(i.description) > DESCRIPTION_MAX_LENGTH:
        problems.append(f"Description is {len(i.description)} characters; the limit is {DESCRIPTION_MAX_LENGTH}")
    problems.extend(_meta_problems(i.meta))
    if i.id is not None:
        try:
            uuid.UUID(str(i.id))
        except ValueError:
            problems.append(f"ID {i.id!r} is not a UUID")
    for name, index in (("CreateIndex", i.create_index), ("ModifyIndex", i.modify_index)):
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
            problems.append(f"{name} {index!r} must be a non-negative integer")
    return problems


def _name_problems(field_name: str, value: object) -> list[str]:
    if not isinstance(value, str) or value == "":
        return [f"{field_name} must be set to a service name or '*'"]
    if value == WILDCARD:
        return []
    if WILDCARD in value:
        # Consul: "wildcard character '*' cannot be used with partial values".
        return [f"{field_name} {value!r}: '*' may only stand alone, not inside a name"]
    try:
        validate_service_name(value)
    except InvalidInput as exc:
        return [f"{field_name}: {exc.message}"]
    return []


def _namespace_problems(field_name: str, ns: object, name: object) -> list[str]:
    if ns == WILDCARD:
        # Consul: a wildcard namespace with a specific name would match that name anywhere.
        return [] if name == WILDCARD else [f"{field_name} '*' needs the name '*' too (a name is in one namespace)"]
    try:
        validate_namespace(ns)  # type: ignore[arg-type]
    except InvalidInput as exc:
        return [f"{field_name}: {exc.message}"]
    return []


def _meta_problems(meta: object) -> list[str]:
    if not isinstance(meta, Mapping):
        return ["Meta must be a map of strings to strings"]
    problems = []
    if len(meta) > META_MAX_PAIRS:
        problems.append(f"Meta has {len(meta)} pairs; the limit is {META_MAX_PAIRS}")
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            problems.append(f"Meta {k!r}: keys and values must be strings")
        elif not k:
            problems.append("Meta keys must not be empty")
        elif len(k) > META_KEY_MAX_LENGTH:
            problems.append(f"Meta key {k[:40]!r}... is longer than {META_KEY_MAX_LENGTH} characters")
        elif len(v) > META_VALUE_MAX_LENGTH:
            problems.append(f"Meta value for {k!r} is longer than {META_VALUE_MAX_LENGTH} characters")
    return problems


# --- Consul JSON shape -------------------------------------------------------------------

# Fields of Consul's intention object Tether reads; matched case-insensitively like Go's
# JSON decoder. Read-only ones (Precedence, CreatedAt, ...) are accepted and ignored.
_FIELDS = {
    "ID": "id", "SourceName": "source_name", "DestinationName": "destination_name",
    "SourceType": "source_type", "Action": "action", "Description": "description",
    "Meta": "meta", "CreateIndex": "create_index", "ModifyIndex": "modify_index",
    "SourceNS": "source_ns", "DestinationNS": "destination_ns",
}
_READ_ONLY = {"Precedence", "CreatedAt", "UpdatedAt", "Hash", "LegacyID"}
# Enterprise / peering scoping fields: accepted only when they say "the default scope".
_SCOPES = {"SourcePartition", "DestinationPartition", "SourcePeer", "SourceSamenessGroup"}


def parse_intention(body: object, *, path: str = "Intention") -> Intention:
    """An Intention from Consul's JSON object (`POST /v1/connect/intentions` body and the
    objects `GET` returns). Unknown fields, L7 `Permissions`, and partitions or peers other
    than the default are refused; every problem is reported at once. SourceNS and
    DestinationNS are kept (empty or absent is `default`)."""
    if not isinstance(body, Mapping):
        raise InvalidInput(f"{path}: expected a JSON object, got {type(body).__name__}")
    folded = {k.lower(): k for k in (*_FIELDS, *_READ_ONLY, *_SCOPES, "Permissions")}
    args: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in body.items():
        canonical = folded.get(key.lower()) if isinstance(key, str) else None
        if canonical is None:
            errors.append(f"{path}.{key}: unknown field")
        elif canonical == "Permissions":
            if value:
                errors.append(f"{path}.Permissions: L7 permissions are not supported; Tether intentions are L4 (allow|deny)")
        elif canonical in _SCOPES:
            allowed = (None, "") if canonical in ("SourcePeer", "SourceSamenessGroup") else (None, "", DEFAULT_NAMESPACE)
            if value not in allowed:
                errors.append(f"{path}.{canonical}: {value!r} is not supported; Tether has one partition and no peers")
        elif canonical in ("SourceNS", "DestinationNS"):
            args[_FIELDS[canonical]] = value or DEFAULT_NAMESPACE
        elif canonical in _FIELDS:
            args[_FIELDS[canonical]] = "" if value is None and canonical == "Description" else value
    if "action" not in args:
        errors.append(f"{path}.Action: required ('allow' or 'deny')")
    if "meta" in args and args["meta"] is None:
        args["meta"] = {}
    for key in ("source_name", "destination_name"):
        args.setdefault(key, "")
    args.setdefault("source_type", SOURCE_TYPE_CONSUL)
    if errors:
        raise InvalidInput("; ".join(errors))
    try:
        return Intention(**args)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc.message}") from None
    except TypeError as exc:  # a value of the wrong JSON type slipped past the checks
        raise InvalidInput(f"{path}: {exc}") from None


def format_intention(i: Intention) -> dict[str, Any]:
    """Consul's JSON shape for `i` (what the HTTP API returns)."""
    out: dict[str, Any] = {
        "SourceNS": i.source_ns,
        "SourceName": i.source_name,
        "DestinationNS": i.destination_ns,
        "DestinationName": i.destination_name,
        "SourceType": i.source_type,
        "Action": i.action,
        "Description": i.description,
        "Meta": dict(i.meta),
        "Precedence": i.precedence,
    }
    if i.id is not None:
        out["ID"] = i.id
    if i.create_index is not None:
        out["CreateIndex"] = i.create_index
    if i.modify_index is not None:
        out["ModifyIndex"] = i.modify_index
    return out


def parse_state_intentions(raws: Any, known: Mapping[tuple[Any, Any], Intention] | None,
                           errors: list[str]) -> list[Intention]:
    """The `Intentions` of an authorization state (Consul intention objects), reusing those
    `known` by (ID, ModifyIndex) so a watcher re-parses only what changed; each problem is
    appended to `errors` (path `Intentions[n]`)."""
    found: list[Intention] = []
    for n, raw in enumerate(raws or ()):
        reuse = known.get((raw.get("ID"), raw.get("ModifyIndex"))) if known and isinstance(raw, Mapping) else None
        if reuse is not None:
            found.append(reuse)
            continue
        try:
            found.append(parse_intention(raw, path=f"Intentions[{n}]"))
        except InvalidInput as exc:
            errors.append(exc.message)
    return found
