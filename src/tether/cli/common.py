"""Options and output helpers shared by every CLI command.

Output is plain text, Consul-style (aligned columns, one line per message): it reads the
same in a terminal, a pipe and a log, and costs no import (Rich took longer to load than
a whole `tether kv get`: docs/performance.md, "CLI start-up").
"""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import typer

from tether.cli.client import Client

HttpAddr = typer.Option(None, "-http-addr", "--http-addr", metavar="HOST:PORT",
                        help="Agent address (default: $TETHER_HTTP_ADDR, then $CONSUL_HTTP_ADDR, then "
                             "127.0.0.1:8500).")
Token = typer.Option(None, "-token", "--token", metavar="SECRET",
                     help="ACL token (default: $TETHER_HTTP_TOKEN or $CONSUL_HTTP_TOKEN).")
TokenFile = typer.Option(None, "-token-file", "--token-file", metavar="FILE",
                         help="Read the ACL token from FILE (also $TETHER_HTTP_TOKEN_FILE, $CONSUL_HTTP_TOKEN_FILE).")

class _Out:
    """`out.print(text)`: one message on stdout (the keyword arguments Rich took are ignored)."""

    def print(self, *parts: Any, **_: Any) -> None:
        print(*parts, flush=True)


out = _Out()


def client(addr: str | None, token: str | None = None, token_file: str | None = None) -> Client:
    from tether.sdk.addr import resolve_token

    return Client(addr, resolve_token(token, token_file))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Aligned columns, two spaces apart, as Consul's CLI prints them (the last one not padded)."""
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + ("  " if len(row) > 1 else "")
                     + row[-1] for row in cells)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    print(format_table(columns, rows), flush=True)
