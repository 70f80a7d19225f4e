"""Options and output helpers shared by every CLI command."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import typer
from rich.console import Console
from rich.table import Table

from tether.cli.client import Client

HttpAddr = typer.Option(None, "-http-addr", "--http-addr", metavar="HOST:PORT",
                        help="Agent address (default: $TETHER_HTTP_ADDR, then 127.0.0.1:8500).")
Token = typer.Option(None, "-token", "--token", metavar="SECRET",
                     help="ACL token (default: $TETHER_HTTP_TOKEN or $CONSUL_HTTP_TOKEN).")
TokenFile = typer.Option(None, "-token-file", "--token-file", metavar="FILE",
                         help="Read the ACL token from FILE (also $TETHER_HTTP_TOKEN_FILE, $CONSUL_HTTP_TOKEN_FILE).")

out = Console(soft_wrap=True)


def client(addr: str | None, token: str | None = None, token_file: str | None = None) -> Client:
    from tether.sdk.addr import resolve_token

    return Client(addr, resolve_token(token, token_file))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    out.print(table)
