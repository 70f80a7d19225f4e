"""Skips for a missing dependency, which CI turns into failures.

`make test` installs what the suite needs (scripts/test-deps.sh: PostgreSQL, Redis, Go, Node,
iptables, iproute2, HAProxy, nginx, util-linux). A test that cannot run without one of them
skips with `missing(...)` as its reason, so a developer's machine without root still runs
the rest. Under CI (`CI=true`) such a skip is a failure (tests/conftest.py): `make test`
promised the dependency, and a green run must not hide a feature that was never tested.
Skips for other reasons (not root, no network namespaces in this sandbox) stay skips.
"""

from __future__ import annotations

import os

MISSING = "missing dependency"


def missing(what: str) -> str:
    """The skip reason for a dependency `make test` installs."""
    return f"{MISSING}: {what} (make test installs it with scripts/test-deps.sh)"


def is_missing(reason: str) -> bool:
    return MISSING + ":" in reason


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")
