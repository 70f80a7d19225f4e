"""Go-style durations ("72h", "1h30m", "500ms"), parsed and formatted.

Consul's HTTP API and config files write every duration in Go's `time.Duration`
syntax, so Tether's API layer, config loader and CLI all go through these two
functions. Pure: no clocks, no I/O.

Internally everything is integer nanoseconds, as in Go, so formatting never
shows float noise ("1.5s", not "1.4999999s"); callers get float seconds.
"""

from __future__ import annotations

import re

from tether.core.errors import InvalidInput

NANOSECOND = 1
MICROSECOND = 1_000 * NANOSECOND
MILLISECOND = 1_000 * MICROSECOND
SECOND = 1_000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

#: Go's Duration is an int64 of nanoseconds (about 292 years); beyond it Go refuses too.
MAX_NANOSECONDS = 2**63 - 1

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign, as Go prints it
    "\u03bcs": MICROSECOND,  # Greek small mu, which Go also accepts
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

# One "<number><unit>" term; Go allows "1.", ".5" and "1.5" as the number.
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration_ns(text: str, *, field: str = "duration") -> int:
    """Parse a Go duration string into integer nanoseconds (may be negative, like Go)."""
    if not isinstance(text, str):
        raise InvalidInput(f"{field}: expected a duration string such as \"72h\", got {text!r}")
    body, sign = text, 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise InvalidInput(f"{field}: empty duration; write e.g. \"72h\", \"30s\" or \"1h30m\"")
    total, pos = 0, 0
    while pos < len(body):
        match = _TERM.match(body, pos)
        if match is None:
            raise InvalidInput(
                f"{field}: invalid duration {text!r}; use numbers with units "
                "ns, us, ms, s, m, h (e.g. \"72h\", \"1h30m\", \"500ms\")"
            )
        total += _term_ns(match.group(1), _UNITS[match.group(2)])
        pos = match.end()
    if total > MAX_NANOSECONDS:
        raise InvalidInput(f"{field}: duration {text!r} is too large (max about 292 years)")
    return sign * total


def _term_ns(number: str, unit: int) -> int:
    """Exact integer nanoseconds of "<number>" units, truncating sub-nanosecond digits as Go does."""
    whole, _, frac = number.partition(".")
    ns = int(whole or "0") * unit
    if frac:
        ns += int(frac) * unit // 10 ** len(frac)
    return ns


def parse_duration(text: str, *, field: str = "duration") -> float:
    """Parse a Go duration string ("72h", "30s", "1h30m", "10m") into float seconds."""
    return parse_duration_ns(text, field=field) / SECOND


def format_duration(seconds: float) -> str:
    """Format seconds the way Go's `Duration.String()` does ("72h0m0s", "1.5s", "500ms", "0s")."""
    return format_duration_ns(round(seconds * SECOND))


def format_duration_ns(ns: int) -> str:
    """Format integer nanoseconds the way Go's `Duration.String()` does."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < SECOND:
        # Go switches to the largest sub-second unit that keeps a leading non-zero digit.
        for unit, name in ((MILLISECOND, "ms"), (MICROSECOND, "\u00b5s"), (NANOSECOND, "ns")):
            if ns >= unit:
                return sign + _fixed(ns, unit) + name
    hours, rest = divmod(ns, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    text = _fixed(rest, SECOND) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _fixed(value: int, unit: int) -> str:
    """value/unit in decimal without trailing zeros ("1.5", "3", "0.25")."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
