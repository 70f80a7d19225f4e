"""Save a store to a snapshot and restore one into an empty store (either backend)."""

from __future__ import annotations

from typing import Any

from tether.core.errors import Conflict
from tether.core.snapshot_format import encode, is_ephemeral
from tether.store.base import Put, Store

CHUNK = 100  # documents per transaction: under etcd's 128 operations


def save(store: Store) -> bytes:
    """Every document at one index: reads are synchronous, so nothing changes in between."""
    return encode(store.revision, ((e.key, e.value) for e in store.list("")))


async def restore(store: Store, entries: list[tuple[str, Any]], where: str) -> int:
    """Write `entries` into `store`, which must hold nothing yet; returns how many."""
    present = [e.key for e in store.list("") if not is_ephemeral(e.key)]
    if present:
        raise Conflict(f"{where} is not empty ({len(present)} keys, e.g. {present[0]!r}); restore into a new "
                       "-data-dir or an unused etcd prefix, with no server running on it")
    for i in range(0, len(entries), CHUNK):
        await store.commit([Put(k, v) for k, v in entries[i:i + CHUNK]])
    return len(entries)
