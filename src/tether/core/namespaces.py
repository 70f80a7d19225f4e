"""Service namespaces: Consul's `Namespace` registration field, kept and never widened.

A registration may name its namespace (`"Namespace": "emojivoto"`, Consul Enterprise's
field); without one it is in `default`, so data stored before namespaces existed keeps
its meaning. The namespace travels into the service's SPIFFE ID
(`spiffe://<td>/ns/<namespace>/dc/<dc>/svc/<name>`), into the shapes the catalog and
health endpoints return, and into every authorization decision (core/authz.py).

Tether keeps one service name in one namespace: a name registered in `a` cannot be
registered in `b` as well (`namespace_conflict`). That keeps every name-keyed part of the
mesh (server policies, upstreams, DNS, leaf certificates) unambiguous, and it is what lets
the CA sign a leaf with the namespace the catalog holds rather than the one a CSR asks for.

Reads filter by Consul's `?ns=` query parameter: absent means `default` (as Consul
Enterprise answers a request without one), `*` means every namespace. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tether.core.errors import InvalidInput
from tether.core.spiffe import DEFAULT_NAMESPACE, validate_namespace

__all__ = ["ALL_NAMESPACES", "DEFAULT_NAMESPACE", "in_namespace", "namespace_conflict", "namespace_of",
           "parse_ns_param", "service_namespaces", "state_namespaces"]

#: `?ns=*`: every namespace.
ALL_NAMESPACES = "*"


def namespace_of(doc: Mapping[str, Any]) -> str:
    """The namespace of a stored service instance (`default` for one stored without)."""
    return doc.get("Namespace") or DEFAULT_NAMESPACE


def parse_ns_param(value: str | None) -> str:
    """Consul's `?ns=`: absent or empty is `default`; `*` is every namespace; else a DNS label."""
    if not value:
        return DEFAULT_NAMESPACE
    if value == ALL_NAMESPACES:
        return value
    try:
        return validate_namespace(value)
    except InvalidInput as exc:
        raise InvalidInput(f"ns: {exc.message}") from None


def in_namespace(docs: Iterable[Mapping[str, Any]], ns: str) -> list[Any]:
    """The instances of namespace `ns` (every one for `*`)."""
    return [d for d in docs if ns == ALL_NAMESPACES or namespace_of(d) == ns]


def service_namespaces(instances: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """{service name: its namespace} over stored instances (names are unique across namespaces)."""
    return {d.get("Service", ""): namespace_of(d) for d in instances}


def state_namespaces(state: Mapping[str, Any]) -> dict[str, str]:
    """The `Namespaces` of an authorization state ({service: namespace}, non-default only;
    absent in states written before namespaces: every service is in `default`)."""
    raw = state.get("Namespaces") or {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise InvalidInput("authorization state: Namespaces must map service names to namespaces")
    return dict(raw)


def namespace_conflict(new: Iterable[Mapping[str, Any]], existing: Mapping[str, str]) -> str | None:
    """Why registering `new` instances would put one service name in two namespaces, or None.
    `existing` maps the names already registered (by other instances) to their namespace."""
    seen = dict(existing)
    for doc in new:
        name, ns = doc.get("Service", ""), namespace_of(doc)
        other = seen.setdefault(name, ns)
        if other != ns:
            return (f"Namespace: service {name!r} is registered in namespace {other!r}; a service name lives in "
                    f"one namespace in Tether, so it cannot also be registered in {ns!r} (deregister it there first, "
                    "or choose another name)")
    return None
