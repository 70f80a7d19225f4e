"""Health status arithmetic: aggregating checks, filtering for `?passing`, aliases.

Statuses are ordered passing < warning < critical, and an instance's status is the worst
of its own checks and its node's checks (a dead node makes every instance on it
critical), as in Consul.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
_RANK = {PASSING: 0, WARNING: 1, CRITICAL: 2}

# The node check every agent keeps (Consul calls it serfHealth; we keep the ID so that
# tools that look for it find it).
NODE_CHECK_ID = "serfHealth"
NODE_CHECK_NAME = "Agent alive and reachable"
#: A sidecar's check on its public listener (Consul's name); Tether's proxy passes it itself.
SIDECAR_LISTENING_CHECK = "Connect Sidecar Listening"


def worst(statuses: Iterable[str]) -> str:
    """The most severe status; passing when there is none."""
    return max(statuses, key=_RANK.__getitem__, default=PASSING)


def all_passing(checks: Iterable[Mapping[str, Any]]) -> bool:
    return all(c["Status"] == PASSING for c in checks)


def alias_status(target_checks: Iterable[Mapping[str, Any]], target_exists: bool) -> tuple[str, str]:
    """Status and output of an alias check: the worst of the target's checks."""
    if not target_exists:
        return CRITICAL, "aliased service is not registered"
    checks = list(target_checks)
    status = worst(c["Status"] for c in checks)
    if not checks:
        return PASSING, "aliased service has no checks, so it counts as passing"
    return status, f"aliased service is {status}"


def health_entry(node: Mapping[str, Any], service: Mapping[str, Any], checks: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One element of /v1/health/service/:name, in Consul's shape."""
    return {"Node": dict(node), "Service": dict(service), "Checks": [dict(c) for c in checks]}


def http_status_for(status: str) -> int:
    """/v1/agent/health/service/*: 200 passing, 429 warning, 503 critical (Consul's codes)."""
    return {PASSING: 200, WARNING: 429, CRITICAL: 503}[status]
