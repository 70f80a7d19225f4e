"""Certificate validity-window math: when to renew a leaf, when a root may be dropped.

Pure functions over timezone-aware datetimes; the caller passes `now` and the random
draw `u`, so the agent's leaf cache, the server's rotation loop and the tests all
get the same answers from the same inputs.

Schedule (as Consul's leaf cache, `calculateSoftExpiry`): renew at a random point
between 60% and 90% of the lifetime, so thousands of leaves issued together do not
all come back at once; past 90% renewal is immediate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tether.core.duration import format_duration
from tether.core.errors import InvalidInput

#: Consul's default leaf lifetime; also how long a leaderless cluster keeps working.
DEFAULT_LEAF_TTL_SECONDS = 72 * 3600.0
#: Ours is 1 minute so tests can exercise expiry and renewal quickly; Consul's minimum is 1h.
MIN_LEAF_TTL_SECONDS = 60.0
#: Same as Consul's maximum (1 year).
MAX_LEAF_TTL_SECONDS = 365 * 24 * 3600.0
#: Consul's RootCertTTL default (87600h).
ROOT_TTL_SECONDS = 87600 * 3600.0
#: Renewal jitter window, as fractions of the leaf's lifetime.
RENEW_MIN_FRACTION = 0.6
RENEW_MAX_FRACTION = 0.9
#: An inactive root is kept this many leaf TTLs, so every leaf it signed has expired first.
ROOT_KEEP_LEAF_TTLS = 2
#: Retry delays after a failed renewal: doubling from MIN to MAX seconds.
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 0.25, 30.0


def renewal_point(valid_after: datetime, valid_before: datetime, u: float) -> datetime:
    """The moment to renew a leaf valid in [valid_after, valid_before), for a draw u in [0, 1)."""
    _require_window(valid_after, valid_before)
    if not 0.0 <= u < 1.0:
        raise InvalidInput(f"renewal draw u={u!r} must be in [0, 1)")
    fraction = RENEW_MIN_FRACTION + (RENEW_MAX_FRACTION - RENEW_MIN_FRACTION) * u
    return valid_after + (valid_before - valid_after) * fraction


def retry_delay(failures: int, remaining: float = 0.0, *, retry_after: float | None = None, u: float = 0.5) -> float:
    """Seconds to wait after `failures` (1, 2, ...) failed attempts in a row.

    0.25 s doubling to 30 s. A server that said how long to wait (429 Retry-After) is
    followed instead, spread over 0.5-1.5x of it by the draw `u` in [0, 1) so agents told
    the same do not come back together. While a cached leaf is still valid (`remaining`
    seconds left, > 0) the wait is never longer than a quarter of what is left, nor
    shorter than 0.25 s, so several attempts fit before it expires.
    """
    if failures < 1:
        raise InvalidInput(f"retry_delay: failures={failures!r} must be at least 1")
    if retry_after is not None:
        delay = max(RETRY_MIN_SECONDS, retry_after * (0.5 + u))
    else:
        delay = min(RETRY_MAX_SECONDS, RETRY_MIN_SECONDS * 2 ** min(failures - 1, 16))
    if remaining > 0:
        delay = min(delay, max(RETRY_MIN_SECONDS, remaining / 4))
    return delay


def is_due(now: datetime, valid_after: datetime, valid_before: datetime, renew_at: datetime | None) -> bool:
    """True when the leaf should be renewed now.

    `renew_at` is the point chosen by renewal_point (None: renew at the earliest allowed
    point). It is clamped into the 60-90% window, so a stale or hand-made value can never
    make a leaf due too early or too late.
    """
    _require_window(valid_after, valid_before)
    _require_aware(now, "now")
    lifetime = valid_before - valid_after
    earliest = valid_after + lifetime * RENEW_MIN_FRACTION
    latest = valid_after + lifetime * RENEW_MAX_FRACTION
    if renew_at is None:
        target = earliest
    else:
        _require_aware(renew_at, "renew_at")
        target = min(max(renew_at, earliest), latest)
    return now >= target


def is_expired(now: datetime, valid_before: datetime) -> bool:
    """True once `now` has reached the end of the validity window."""
    _require_aware(now, "now")
    _require_aware(valid_before, "valid_before")
    return now >= valid_before


def is_current(now: datetime, valid_after: datetime, valid_before: datetime) -> bool:
    """True when `now` lies inside [valid_after, valid_before)."""
    _require_window(valid_after, valid_before)
    _require_aware(now, "now")
    return valid_after <= now < valid_before


def root_prunable(now: datetime, rotated_out_at: datetime | None, leaf_ttl_seconds: float) -> bool:
    """True when a root inactive since `rotated_out_at` may be dropped from the served set.

    A root still active (rotated_out_at None) is never prunable. It is kept for more than
    2x the leaf TTL so every leaf it signed has expired (the extra TTL covers leaves
    signed just before rotation and clock skew).
    """
    _require_aware(now, "now")
    if rotated_out_at is None:
        return False
    _require_aware(rotated_out_at, "rotated_out_at")
    return now - rotated_out_at > timedelta(seconds=ROOT_KEEP_LEAF_TTLS * leaf_ttl_seconds)


def validate_leaf_ttl(
    seconds: float, *, field: str = "LeafCertTTL", min_seconds: float = MIN_LEAF_TTL_SECONDS
) -> float:
    """Check a leaf TTL is within 1 minute .. 1 year; return it as float seconds.

    `min_seconds` lowers the floor for tests only (the server's `ca_min_leaf_ttl`), so
    renewal can be exercised with leaves that live a few seconds.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        raise InvalidInput(f"{field} must be a number of seconds, got {seconds!r}")
    if not min_seconds <= seconds <= MAX_LEAF_TTL_SECONDS:
        floor = "1m" if min_seconds == MIN_LEAF_TTL_SECONDS else format_duration(min_seconds)
        raise InvalidInput(
            f"{field} {_shown(seconds)} is out of range; use between {floor} and 8760h (1 year), e.g. \"72h\""
        )
    return float(seconds)


def _shown(seconds: float) -> str:
    """A TTL as a Go duration when it fits one (infinity does not)."""
    return format_duration(seconds) if abs(seconds) < 2**63 / 1e9 else f"{seconds:g}s"


def _require_window(valid_after: datetime, valid_before: datetime) -> None:
    _require_aware(valid_after, "valid_after")
    _require_aware(valid_before, "valid_before")
    if valid_before <= valid_after:
        raise InvalidInput(f"validity window is empty: valid_before {valid_before} <= valid_after {valid_after}")


def _require_aware(value: datetime, name: str) -> None:
    # Naive datetimes silently compare in local time; refuse them rather than guess.
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime, got {value!r}")
