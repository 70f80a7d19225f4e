"""`tether get KIND [NAME]`: which stored documents a request names, kubectl style. Pure.

The documents are the ones the control plane keeps as applied (Linkerd and Istio objects,
Tether ServerPolicies and the MeshPolicy, external services and DestinationRules), read
generically: a document is selected by its `kind`, `metadata.name` and
`metadata.namespace`, never by kind-specific code, so a kind stored later is served
without a change here. KIND is matched as kubectl matches it: case-insensitively, singular
or plural (`server`, `servers`, `Server`), optionally with its API group
(`servers.policy.linkerd.io`). What is printed is the document as stored, which
`tether apply -f` reads back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tether.core.errors import InvalidInput, NotFound

#: Kinds `tether apply` stores, so that "nothing stored" and "no such kind" read differently.
KNOWN_KINDS = (
    "Server", "ServerAuthorization", "AuthorizationPolicy", "MeshTLSAuthentication", "NetworkAuthentication",
    "Namespace", "ServerPolicy", "MeshPolicy", "ServiceEntry", "DestinationRule", "ExternalService",
)


def _plurals(kind: str) -> set[str]:
    low = kind.lower()
    return {low, low + "s", low + "es", low[:-1] + "ies" if low.endswith("y") else low}


def kind_matches(query: str, doc: Mapping[str, Any]) -> bool:
    """Whether `query` (`server`, `Servers`, `servers.policy.linkerd.io`) names the document's kind."""
    word, _, group = query.lower().partition(".")
    doc_group = str(doc.get("apiVersion", "")).split("/")[0].lower() if "/" in str(doc.get("apiVersion", "")) else ""
    return word in _plurals(str(doc.get("kind", ""))) and (not group or group == doc_group)


def _meta(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = doc.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def select(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None,
           namespace: str | None = None) -> list[Mapping[str, Any]]:
    """The documents of `kind` (named `name`, in `namespace` when given: documents without a
    namespace, such as MeshPolicy, are mesh-wide and kept). Raises InvalidInput for a kind
    nothing stored or known carries, NotFound when NAME matches nothing, InvalidInput when
    NAME is in several namespaces and no namespace was given."""
    docs = list(docs)
    if not any(kind_matches(kind, d) for d in docs) and not any(kind_matches(kind, {"kind": k}) for k in KNOWN_KINDS):
        stored = sorted({str(d.get("kind")) for d in docs} | set(KNOWN_KINDS))
        raise InvalidInput(f"KIND: {kind!r} is not a kind Tether stores; use one of {', '.join(stored)}")
    found = [d for d in docs if kind_matches(kind, d)
             and (namespace is None or _meta(d).get("namespace") in (None, namespace))
             and (name is None or _meta(d).get("name") == name)]
    if name is not None:
        if not found:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise NotFound(f"no {kind} named {name!r}{where}; `tether get {kind}` lists them")
        spaces = sorted({str(_meta(d).get("namespace")) for d in found})
        if len(found) > 1:
            raise InvalidInput(f"{kind} {name!r} is in namespaces {', '.join(spaces)}: give -n NAMESPACE")
    return found


def as_output(found: Sequence[Mapping[str, Any]], *, named: bool) -> Any:
    """One document when a NAME was given, else a `kind: List` (what kubectl prints and
    `tether apply -f` reads)."""
    if named:
        return dict(found[0])
    return {"apiVersion": "v1", "kind": "List", "items": [dict(d) for d in found]}


def table_rows(found: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(KIND, NAMESPACE, NAME) per document; `-` for a mesh-wide one."""
    return [(str(d.get("kind", "")), str(_meta(d).get("namespace") or "-"), str(_meta(d).get("name") or "-"))
            for d in found]
