"""DNS host names and wildcard host patterns: validation, matching, most-specific selection.

Pure core code used by the external-service registry (core/external.py), the egress
decision and, later, gateway and route host lists.

Semantics follow Istio's `host.Name` (pkg/config/host/name.go), read through its tests:

* an exact pattern matches only the identical name (case-insensitive, as DNS is);
* `*.example.com` matches any name that ends in `.example.com` with **one or more**
  labels in front: `a.example.com` and `a.b.example.com`, never `example.com` itself;
* `*.com` is a legal pattern (it matches every name under `com`);
* a bare `*` matches everything; Istio refuses it in ServiceEntry hosts and so does
  Tether (`allow_any=False`, the default).

Where Tether is stricter than Istio: a wildcard must be the whole left-most label.
Istio also accepts partial labels such as `*foo.example.com` and then matches by raw
string suffix (so `barfoo.example.com` matches); Tether refuses those patterns.

Most specific wins: an exact name beats any wildcard, and between wildcards the longer
suffix (more labels) wins. Two wildcards that both match one name are both suffixes of
it, so the longer one is strictly more specific: there are no ties except duplicates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar

from tether.core.errors import InvalidInput

#: RFC 1035: 255 octets on the wire, which is 253 characters in dotted text form.
MAX_NAME_LENGTH = 253
#: RFC 1035 label limit.
MAX_LABEL_LENGTH = 63

# RFC 1123 label: letters, digits, hyphens; no hyphen at either end. Lowercase only,
# because names are lowercased before they are checked.
_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
# Names seen at run time (SNI) may also carry underscores, which real services use
# (e.g. `_acme.example.com` style names); they are matched, never configured.
_RUNTIME_LABEL = re.compile(r"[a-z0-9_](?:[-a-z0-9_]{0,61}[a-z0-9_])?")

T = TypeVar("T")


def host_problem(value: object, *, allow_wildcard: bool = True, allow_any: bool = False) -> str | None:
    """Say what is wrong with `value` as a configured host pattern, or None if it is fine.

    Returned text names the value, so callers can collect problems before failing.
    """
    if not isinstance(value, str):
        return f"host {value!r} must be a string"
    if value == "*":
        if allow_any:
            return None
        return "host '*' is not allowed: name the domain, e.g. '*.example.com'"
    name = value.lower()
    if not name:
        return "host '' is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"host {value!r} is longer than {MAX_NAME_LENGTH} characters"
    if name.endswith("."):
        return f"host {value!r} must not end with '.'"
    labels = name.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            return f"host {value!r} is a wildcard; an exact DNS name is needed here"
        if len(labels) == 1:
            return "host '*' is not allowed"
        labels = labels[1:]
    for label in labels:
        if "*" in label:
            return (f"host {value!r}: a wildcard must be the whole left-most label "
                    "('*.example.com'); partial or inner wildcards are not supported")
        if not _LABEL.fullmatch(label):
            return (f"host {value!r}: label {label!r} is not a valid DNS label "
                    "(letters, digits and '-', 1-63 characters, no '-' at either end)")
    if labels[-1].isdigit():
        return f"host {value!r} looks like an IP address; put addresses under 'addresses'"
    return None


def parse_host_pattern(value: object, *, allow_wildcard: bool = True, allow_any: bool = False) -> str:
    """Validate and normalise (lowercase) a configured host pattern, or raise InvalidInput."""
    problem = host_problem(value, allow_wildcard=allow_wildcard, allow_any=allow_any)
    if problem is not None:
        raise InvalidInput(problem)
    assert isinstance(value, str)
    return value.lower()


def parse_dns_name(value: object) -> str:
    """Validate and normalise an exact DNS name (no wildcard), or raise InvalidInput."""
    return parse_host_pattern(value, allow_wildcard=False)


def normalize_runtime_name(value: str) -> str | None:
    """Normalise a name seen on the wire (TLS SNI) for matching; None if it cannot be a host name.

    Lowercases, drops one trailing dot (some clients send the absolute form), and
    checks the labels loosely (underscores allowed) so garbage never matches a pattern.
    """
    name = value.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME_LENGTH:
        return None
    for label in name.split("."):
        if not _RUNTIME_LABEL.fullmatch(label):
            return None
    return name


def is_wildcard(pattern: str) -> bool:
    """True for `*` and `*.suffix` patterns."""
    return pattern.startswith("*")


def match_host(pattern: str, name: str) -> bool:
    """True when the (valid, normalised) pattern covers the concrete, normalised name."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        # At least one non-empty label must stand in front of the suffix.
        return name.endswith(suffix) and len(name) > len(suffix) and name[-len(suffix) - 1] != "."
    return pattern == name


def host_specificity(pattern: str) -> tuple[int, int, int]:
    """Sort key: larger is more specific. Exact > wildcard; then more labels; then longer."""
    exact = 0 if is_wildcard(pattern) else 1
    labels = 0 if pattern == "*" else pattern.count(".") + 1 - (1 - exact)
    return (exact, labels, len(pattern))


def match_most_specific(patterns: Iterable[str], name: str) -> str | None:
    """The most specific of `patterns` that matches `name`, or None. Reference for HostIndex."""
    best: str | None = None
    for pattern in patterns:
        if match_host(pattern, name) and (best is None or host_specificity(pattern) > host_specificity(best)):
            best = pattern
    return best


class HostIndex(Generic[T]):
    """Patterns mapped to values, answering "most specific match" in O(labels of the name).

    Built once from (pattern, value) pairs (patterns already validated and normalised);
    a pattern may carry several values, kept in insertion order. Lookups walk the
    name's suffixes from the longest down, so the first hit is the most specific.
    """

    __slots__ = ("_exact", "_wild", "_any")

    def __init__(self, pairs: Iterable[tuple[str, T]]) -> None:
        exact: dict[str, list[T]] = {}
        wild: dict[str, list[T]] = {}  # keyed by the suffix with its dot: ".example.com"
        any_: list[T] = []
        for pattern, value in pairs:
            if pattern == "*":
                any_.append(value)
            elif pattern.startswith("*."):
                wild.setdefault(pattern[1:], []).append(value)
            else:
                exact.setdefault(pattern, []).append(value)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._wild = {k: tuple(v) for k, v in wild.items()}
        self._any = tuple(any_)

    def lookup(self, name: str) -> tuple[str, tuple[T, ...]] | None:
        """(matched pattern, its values) for the most specific match of `name`, or None."""
        hit = self._exact.get(name)
        if hit is not None:
            return name, hit
        if self._wild:
            dot = name.find(".")
            # Start after the first label: the wildcard needs at least one label in front.
            while dot > 0:
                values = self._wild.get(name[dot:])
                # name[dot-1] == "." would mean an empty label in front: not a match.
                if values is not None and name[dot - 1] != ".":
                    return "*" + name[dot:], values
                dot = name.find(".", dot + 1)
        if self._any:
            return "*", self._any
        return None

    def __len__(self) -> int:
        return len(self._exact) + len(self._wild) + (1 if self._any else 0)
