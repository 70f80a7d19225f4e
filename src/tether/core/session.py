"""Sessions and KV locks, Consul's rules as pure functions (no clock, no store).

A session binds locks to the health of a node: it names a node and health checks (by
default the node's `serfHealth`), and is invalidated when the node goes away, when one
of its checks turns critical or is removed, or when its TTL passes without a renewal.
An invalidated session releases the keys it holds (`Behavior: release`) or deletes them
(`delete`), and the keys it held cannot be acquired again for its `LockDelay`, so a
process that lost its lock has time to notice before another takes over.

Consul's bounds, which this module enforces: TTL between 10s and 24h (Consul invalidates
a session only after twice its TTL, to allow for clock skew and late renewals), LockDelay
at most 60s (15s by default; a bare number below 1000 means seconds, above it
nanoseconds, as Consul's decoder reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from tether.core.duration import parse_duration
from tether.core.errors import InvalidInput
from tether.core.health import CRITICAL, NODE_CHECK_ID
from tether.core.normalize import Shape, normalize, raise_if

DEFAULT_LOCK_DELAY = 15.0
MAX_LOCK_DELAY = 60.0
MIN_TTL, MAX_TTL = 10.0, 86400.0
#: Consul waits this multiple of the TTL before it invalidates an unrenewed session.
TTL_GRACE_FACTOR = 2
BEHAVIORS = ("release", "delete")
_NS = 1_000_000_000

SESSION_SHAPE = Shape({"ID": None, "Name": None, "Node": None, "Checks": None, "NodeChecks": None,
                       "ServiceChecks": None, "LockDelay": None, "Behavior": None, "TTL": None,
                       "Namespace": None, "Partition": None})


@dataclass(frozen=True)
class SessionSpec:
    """A validated create request. `lock_delay` and `ttl` are seconds (`ttl` 0: none)."""

    name: str
    node: str
    node_checks: tuple[str, ...]
    service_checks: tuple[str, ...]
    lock_delay: float
    behavior: str
    ttl: float
    ttl_text: str


def parse_session_request(body: Any, default_node: str) -> SessionSpec:
    """PUT /v1/session/create's body (empty allowed) -> SessionSpec, or InvalidInput naming the field."""
    errors: list[str] = []
    data = normalize(body, SESSION_SHAPE, "body", errors) if body is not None else {}
    raise_if([e.removeprefix("body.") for e in errors])
    node = data.get("Node") or default_node
    behavior = data.get("Behavior") or "release"
    if behavior not in BEHAVIORS:
        errors.append(f"Behavior: must be release or delete, not {behavior!r}")
    legacy = _names(data.get("Checks"), "Checks", errors)
    node_checks = _names(data.get("NodeChecks"), "NodeChecks", errors)
    service_checks = _service_checks(data.get("ServiceChecks"), errors)
    if data.get("Checks") is None and data.get("NodeChecks") is None and data.get("ServiceChecks") is None:
        node_checks = (NODE_CHECK_ID,)  # Consul's default: the session lives as long as its node does
    lock_delay = _lock_delay(data.get("LockDelay"), errors)
    ttl_text = data.get("TTL") or ""
    ttl = 0.0
    if ttl_text:
        try:
            ttl = parse_duration(ttl_text, field="TTL")
        except InvalidInput as exc:
            errors.append(str(exc))
        else:
            if ttl and not MIN_TTL <= ttl <= MAX_TTL:
                errors.append(f"TTL: Invalid Session TTL '{ttl_text}', must be between [10s=24h0m0s]")
    raise_if(errors)
    return SessionSpec(name=str(data.get("Name") or ""), node=node,
                       node_checks=tuple(dict.fromkeys(legacy + node_checks)), service_checks=service_checks,
                       lock_delay=lock_delay, behavior=behavior, ttl=ttl, ttl_text=ttl_text if ttl else "")


def _names(value: Any, field: str, errors: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        errors.append(f"{field}: expected a list of check IDs")
        return ()
    return tuple(value)


def _service_checks(value: Any, errors: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    out = []
    for i, item in enumerate(value if isinstance(value, list) else [None]):
        check_id = next((v for k, v in item.items() if k.lower() == "id"), None) if isinstance(item, dict) else None
        if not isinstance(check_id, str) or not check_id:
            errors.append(f"ServiceChecks[{i}]: expected {{\"ID\": \"<check id>\"}}")
        else:
            out.append(check_id)
    return tuple(out)


def _lock_delay(value: Any, errors: list[str]) -> float:
    if value is None or value == "":
        return DEFAULT_LOCK_DELAY
    if isinstance(value, bool):
        seconds = -1.0
    elif isinstance(value, (int, float)):
        seconds = float(value) if value < 1000 else value / _NS
    else:
        try:
            seconds = parse_duration(str(value), field="LockDelay")
        except InvalidInput as exc:
            errors.append(str(exc))
            return 0.0
    if not 0 <= seconds <= MAX_LOCK_DELAY:
        errors.append(f"LockDelay: must be between 0s and 60s, got {value!r}")
    return seconds


def format_session(session_id: str, spec: SessionSpec) -> dict[str, Any]:
    """The stored document, in the JSON shape /v1/session/info answers (LockDelay in nanoseconds)."""
    return {"ID": session_id, "Name": spec.name, "Node": spec.node, "LockDelay": int(spec.lock_delay * _NS),
            "Behavior": spec.behavior, "TTL": spec.ttl_text, "NodeChecks": list(spec.node_checks) or None,
            "ServiceChecks": [{"ID": c, "Namespace": ""} for c in spec.service_checks] or None}


def session_checks(session: Mapping[str, Any]) -> list[str]:
    return list(session.get("NodeChecks") or []) + [c["ID"] for c in session.get("ServiceChecks") or []]


def check_problem(checks: Iterable[str], statuses: Mapping[str, str], node_exists: bool, node: str) -> str | None:
    """Why a session on `node` with these checks cannot exist now (None: it can).

    `statuses` maps the node's check IDs (node and service checks) to their status."""
    if not node_exists:
        return f"Missing node registration: node {node!r} is not in the catalog"
    for check_id in checks:
        if check_id not in statuses:
            return f"Missing check '{check_id}' registration"
        if statuses[check_id] == CRITICAL:
            return f"Check '{check_id}' is in critical state"
    return None


def ttl_deadline(session: Mapping[str, Any], renewed_at: float) -> float | None:
    """When an unrenewed session expires (None: it has no TTL), in the clock of `renewed_at`."""
    ttl = parse_duration(session["TTL"], field="TTL") if session.get("TTL") else 0.0
    return renewed_at + TTL_GRACE_FACTOR * ttl if ttl else None


@dataclass(frozen=True)
class LockOutcome:
    """What an acquire or release does to a key: write `doc` (None: nothing) and answer `ok`."""

    ok: bool
    doc: dict[str, Any] | None


def decide_acquire(current: Mapping[str, Any] | None, new_value: dict[str, Any], session_id: str,
                   delayed: bool) -> LockOutcome:
    """KV `?acquire=<session>`: take the key's lock, or update the value of a lock already held.

    1. Held by another session: refused. 2. Held by this session: the value is updated, the
    LockIndex kept. 3. Free but in its lock-delay window: refused. 4. Free: taken, and
    LockIndex counts one more acquisition."""
    holder = (current or {}).get("Session", "")
    lock_index = (current or {}).get("LockIndex", 0)
    if holder and holder != session_id:
        return LockOutcome(False, None)
    if holder == session_id:
        return LockOutcome(True, {**new_value, "Session": session_id, "LockIndex": lock_index})
    if delayed:
        return LockOutcome(False, None)
    return LockOutcome(True, {**new_value, "Session": session_id, "LockIndex": lock_index + 1})


def decide_release(current: Mapping[str, Any] | None, new_value: dict[str, Any], session_id: str) -> LockOutcome:
    """KV `?release=<session>`: only the holder releases; the value is written, the LockIndex kept."""
    if current is None or current.get("Session", "") != session_id:
        return LockOutcome(False, None)
    return LockOutcome(True, {**new_value, "Session": "", "LockIndex": current.get("LockIndex", 0)})
