"""`PUT /v1/txn`'s KV operations: validation and all-or-nothing evaluation (pure).

`parse_txn(body)` checks the shape and Consul's 64-operation limit. `evaluate(ops, view)`
runs the operations in order against a read-only view of the KV pairs plus what earlier
operations of the same transaction staged, and returns either every result or every
error (Consul's `{"OpIndex", "What"}`), never a mix: the caller commits the staged writes
as one store transaction, guarded by the modify index of every pair it read.

Node, Service and Check operations (`CatalogOp`) are parsed here and planned by the control
plane against the catalog (control/txn_catalog.py); they see the catalog as it was committed,
not what earlier operations of the same transaction staged.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from tether.core.errors import InvalidInput, TooLarge
from tether.core.session import decide_acquire, decide_release

MAX_OPS = 64  # Consul's limit per transaction
KV_VERBS = ("set", "cas", "lock", "unlock", "get", "get-tree", "check-index", "check-session",
            "check-not-exists", "delete", "delete-tree", "delete-cas")
_NEEDS_INDEX = ("cas", "check-index", "delete-cas")
_NEEDS_SESSION = ("lock", "unlock", "check-session")
_READS = ("get", "get-tree")
CATALOG_VERBS = ("set", "cas", "get", "delete", "delete-cas")
CATALOG_KINDS = {"node": "Node", "service": "Service", "check": "Check"}
_FIELDS = {"verb": "Verb", "key": "Key", "value": "Value", "flags": "Flags", "index": "Index", "session": "Session",
           "namespace": "Namespace", "partition": "Partition"}


@dataclass(frozen=True)
class KVOp:
    verb: str
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str = ""


@dataclass(frozen=True)
class CatalogOp:
    """A Node, Service or Check operation: `body` is its object (for Service, `node` names the node)."""

    kind: str  # "Node", "Service" or "Check"
    verb: str
    body: dict[str, Any]
    node: str = ""

    @property
    def index(self) -> int:
        return int(self.body.get("ModifyIndex") or 0)


@dataclass(frozen=True)
class Pair:
    """A pair as the evaluation sees it: the document, and its indexes (0 for a staged one)."""

    doc: Mapping[str, Any]
    create_index: int
    modify_index: int


@dataclass
class Outcome:
    """`results`: (op index, key, Pair or None for a staged write) in answer order; `writes`:
    key -> new document (None: delete); `read`: key -> the modify index it was read at (0: absent)."""

    results: list[tuple[int, str, Pair | None]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    writes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)


def parse_txn(body: Any) -> list[KVOp | CatalogOp]:
    """The request body -> operations; InvalidInput naming the first bad operation's field."""
    if not isinstance(body, list):
        raise InvalidInput("Failed to parse body: expected a JSON array of operations")
    if len(body) > MAX_OPS:
        raise TooLarge(f"Transaction contains too many operations ({len(body)} > {MAX_OPS})")
    return [_parse_op(op, i) for i, op in enumerate(body)]


def _parse_op(op: Any, i: int) -> KVOp | CatalogOp:
    where = f"[{i}]"
    if not isinstance(op, dict) or len(op) != 1:
        raise InvalidInput(f"{where}: each operation is one object with one of KV, Node, Service or Check")
    (kind, inner), = op.items()
    if str(kind).lower() in CATALOG_KINDS:
        return _parse_catalog_op(CATALOG_KINDS[str(kind).lower()], inner, where)
    if kind.lower() != "kv" or not isinstance(inner, dict):
        raise InvalidInput(f"{where}.{kind}: unknown operation kind (KV, Node, Service or Check)")
    data: dict[str, Any] = {}
    for name, value in inner.items():
        canonical = _FIELDS.get(str(name).lower())
        if canonical is None:
            raise InvalidInput(f"{where}.KV.{name}: unknown field")
        data[canonical] = value
    verb = data.get("Verb")
    if verb not in KV_VERBS:
        raise InvalidInput(f"{where}.KV.Verb: must be one of {', '.join(KV_VERBS)}, not {verb!r}")
    key = data.get("Key", "")
    if not isinstance(key, str) or (not key and verb not in ("get-tree", "delete-tree")):
        raise InvalidInput(f"{where}.KV.Key: missing")
    index, flags = data.get("Index", 0), data.get("Flags", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise InvalidInput(f"{where}.KV.Index: must be a non-negative integer")
    if not isinstance(flags, int) or isinstance(flags, bool) or not 0 <= flags < 2**64:
        raise InvalidInput(f"{where}.KV.Flags: must be an unsigned 64-bit integer")
    if verb in _NEEDS_INDEX and "Index" not in data:
        raise InvalidInput(f"{where}.KV.Index: required for {verb}")
    session = data.get("Session") or ""
    if verb in _NEEDS_SESSION and not session:
        raise InvalidInput(f"{where}.KV.Session: required for {verb}")
    try:
        value = base64.b64decode(data.get("Value") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise InvalidInput(f"{where}.KV.Value: must be base64") from None
    return KVOp(verb, key.lstrip("/"), value, flags, index, session)


def _parse_catalog_op(kind: str, inner: Any, where: str) -> CatalogOp:
    if not isinstance(inner, dict):
        raise InvalidInput(f"{where}.{kind}: expected an object")
    fields = {str(k).lower(): (k, v) for k, v in inner.items()}
    allowed = {"verb", kind.lower()} | ({"node"} if kind == "Service" else set())
    for folded, (key, _) in fields.items():
        if folded not in allowed:
            raise InvalidInput(f"{where}.{kind}.{key}: unknown field")
    verb = fields.get("verb", (None, None))[1]
    if verb not in CATALOG_VERBS:
        raise InvalidInput(f"{where}.{kind}.Verb: must be one of {', '.join(CATALOG_VERBS)}, not {verb!r}")
    body = fields.get(kind.lower(), (None, None))[1]
    if not isinstance(body, dict):
        raise InvalidInput(f"{where}.{kind}.{kind}: expected an object")
    node = fields.get("node", (None, ""))[1] if kind == "Service" else ""
    if kind == "Service" and (not isinstance(node, str) or not node):
        raise InvalidInput(f"{where}.Service.Node: missing")
    if verb in ("cas", "delete-cas") and not isinstance(body.get("ModifyIndex"), int):
        raise InvalidInput(f"{where}.{kind}.{kind}.ModifyIndex: required for {verb}")
    return CatalogOp(kind, verb, body, node)


def evaluate(ops: list[KVOp | CatalogOp], get: Callable[[str], Pair | None],
             tree: Callable[[str], list[tuple[str, Pair]]],
             session_exists: Callable[[str], bool], delayed: Callable[[str], bool]) -> Outcome:
    """Run `ops` in order over `get`/`tree` (the stored pairs) and the writes staged so far.

    Keys are KV keys (no store prefix). Every operation runs, so every failing operation is
    reported, as Consul reports them."""
    out = Outcome()

    def current(key: str) -> Pair | None:
        if key in out.writes:
            doc = out.writes[key]
            return None if doc is None else Pair(doc, 0, 0)
        found = get(key)
        out.read.setdefault(key, found.modify_index if found else 0)
        return found

    def staged_tree(prefix: str) -> list[tuple[str, Pair]]:
        """The pairs under `prefix` as this transaction sees them: stored, then staged over them."""
        found = {}
        for key, pair in tree(prefix):
            out.read.setdefault(key, pair.modify_index)
            found[key] = pair
        for key, doc in out.writes.items():
            if key.startswith(prefix):
                if doc is None:
                    found.pop(key, None)
                else:
                    found[key] = Pair(doc, 0, 0)
        return sorted(found.items())

    def fail(i: int, what: str) -> None:
        out.errors.append({"OpIndex": i, "What": what})

    for i, op in enumerate(ops):
        if isinstance(op, CatalogOp):
            continue  # planned against the catalog by the control plane
        pair = current(op.key) if op.verb not in ("get-tree", "delete-tree") else None
        held = (pair.doc.get("Session", "") if pair else "")
        new = {"Value": base64.b64encode(op.value).decode() if op.value else None, "Flags": op.flags}
        lock = {k: pair.doc[k] for k in ("Session", "LockIndex") if pair and k in pair.doc}
        if op.verb in _NEEDS_INDEX:
            have = pair.modify_index if pair else 0
            if have != op.index:
                fail(i, f'current modify index {have} for key "{op.key}" != {op.index}')
                continue
        if op.verb in _NEEDS_SESSION:
            out.sessions.add(op.session)
            if not session_exists(op.session):
                fail(i, f'invalid session "{op.session}"')
                continue
        if op.verb in ("set", "cas"):
            out.writes[op.key] = {**new, **lock}
            out.results.append((i, op.key, None))
        elif op.verb == "lock":
            decided = decide_acquire(pair.doc if pair else None, new, op.session, delayed(op.key))
            if decided.doc is None:
                fail(i, f'failed to lock key "{op.key}", lock is already held')
                continue
            out.writes[op.key] = decided.doc
            out.results.append((i, op.key, None))
        elif op.verb == "unlock":
            decided = decide_release(pair.doc if pair else None, new, op.session)
            if decided.doc is None:
                fail(i, f'failed to unlock key "{op.key}", lock isn\'t held, or is held by another session')
                continue
            out.writes[op.key] = decided.doc
            out.results.append((i, op.key, None))
        elif op.verb == "get":
            if pair is None:
                fail(i, f'key "{op.key}" doesn\'t exist')
                continue
            out.results.append((i, op.key, pair))
        elif op.verb == "get-tree":
            for key, found in staged_tree(op.key):
                out.results.append((i, key, found))
        elif op.verb == "check-session":
            if held != op.session:
                fail(i, f'failed session check for key "{op.key}", current session "{held}" != "{op.session}"')
        elif op.verb == "check-not-exists":
            if pair is not None:
                fail(i, f'key "{op.key}" exists')
        elif op.verb in ("delete", "delete-cas"):
            out.writes[op.key] = None
        elif op.verb == "delete-tree":
            for key, _ in staged_tree(op.key):
                out.writes[key] = None
    if out.errors:
        out.results, out.writes = [], {}
    return out
