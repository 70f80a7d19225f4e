"""The store a server runs on: etcd when `-store etcd://...` names one, else SQLite in the
data directory (or memory for a dev agent without one)."""

from __future__ import annotations

from pathlib import Path

from tether.store.cached import CachedStore


async def open_configured_store(store_url: str | None, data_dir: Path | None) -> CachedStore:
    if store_url:
        from tether.store.etcd import open_etcd_store  # grpc is heavy; SQLite servers never load it

        return await open_etcd_store(store_url)
    from tether.store.sqlite import open_store

    return open_store(data_dir)
