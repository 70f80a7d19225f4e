"""Kubernetes-shaped input for `tether apply`: what `kubectl get -o yaml` prints applies as is.

`expand_documents(docs)` turns decoded YAML/JSON documents into numbered documents:
a `kind: List` (or `*List`, e.g. `ServerList`) becomes its `items` ("3.1", "3.2", ...), and
what Kubernetes writes rather than the user (`status`, and `metadata.uid`,
`resourceVersion`, `managedFields`, ...) is dropped, so no parser ever sees it. Every other
field is left for the kind's own strict parser. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: metadata fields that the API server owns; a document read back from a cluster carries them.
MANAGED_METADATA = frozenset({
    "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers",
})
#: annotations kubectl writes itself (the last applied copy of the whole object).
MANAGED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def expand_documents(docs: Iterable[object]) -> list[tuple[str, object]]:
    """(number, document) for every document, Lists expanded, Kubernetes-owned fields dropped."""
    out: list[tuple[str, object]] = []
    for n, doc in enumerate(docs, start=1):
        if _is_list(doc):
            for i, item in enumerate(doc.get("items") or (), start=1):  # type: ignore[union-attr]
                out.append((f"{n}.{i}", _clean(item)))
        elif doc is not None:
            out.append((str(n), _clean(doc)))
    return out


def _is_list(doc: object) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List")
            and isinstance(doc.get("items"), list))


def _clean(doc: object) -> object:
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {k: v for k, v in doc.items() if k != "status"}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in MANAGED_METADATA}
        notes = meta.get("annotations")
        if isinstance(notes, dict):
            notes = {k: v for k, v in notes.items() if k not in MANAGED_ANNOTATIONS}
            meta["annotations"] = notes
            if not notes:
                del meta["annotations"]
        out["metadata"] = meta
    return out
