"""`tether snapshot save|restore`: back up a cluster's store, restore it into an empty one."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client

snapshot_app = typer.Typer(help="Save the cluster's state to a file; restore it into an empty store.",
                           no_args_is_help=True)


@snapshot_app.command("save")
def snapshot_save(
    file: Path = typer.Argument(..., help="Where to write the snapshot (mode 0600: it holds every secret)."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Save every document of the store, at one index, to FILE (needs acl:write with ACLs on).

    Examples:

      tether snapshot save backup.snap

      tether snapshot save -http-addr 10.0.0.5:8500 -token-file mgmt.token backup.snap
    """
    response = client(http_addr, token, token_file).get("/v1/snapshot")
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(response.content)
    os.chmod(file, 0o600)
    print(f"Saved snapshot at index {response.headers.get('X-Consul-Index', '?')} to {file}")


@snapshot_app.command("restore")
def snapshot_restore(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A file from 'tether snapshot save'."),
    data_dir: Path = typer.Option(None, "-data-dir", "--data-dir", help="Restore into a new SQLite store here."),
    store: str = typer.Option(None, "-store", "--store", metavar="etcd://HOST:PORT,...",
                              help="Restore into an unused prefix of this etcd (docs/etcd.md)."),
) -> None:
    """Restore FILE into an empty store, with no server running on it; then start the servers.

    SQLite -> etcd is the way from one server to several. A corrupt file, one from a newer
    Tether, or a store that is not empty is refused before anything is written.

    Examples:

      tether snapshot restore backup.snap -data-dir /var/lib/tether

      tether snapshot restore backup.snap -store 'etcd://10.0.0.1:2379,10.0.0.2:2379?prefix=/tether/'
    """
    from tether.core.snapshot_format import decode

    if (data_dir is None) == (store is None):
        raise typer.BadParameter("give -data-dir DIR or -store etcd://..., the store to restore into")
    if store is not None:
        from tether.cli.run_cmds import _store_url

        _store_url(store)
    index, entries = decode(file.read_bytes())  # refused here, before the store is even opened
    count = asyncio.run(_restore(entries, store, data_dir))
    print(f"Restored {count} documents (saved at index {index}) into {store.partition('?')[0] if store else data_dir}")


async def _restore(entries, store_url: str | None, data_dir: Path | None) -> int:  # type: ignore[no-untyped-def]
    from tether.store.configured import open_configured_store
    from tether.store.snapshot import restore

    target = await open_configured_store(store_url, data_dir)
    try:
        return await restore(target, entries, store_url.partition("?")[0] if store_url else str(data_dir))
    finally:
        await target.close()
