"""`tether config write|read|list|delete`: Consul's config entries (`consul config ...`)."""

from __future__ import annotations

import json
import sys

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json
from tether.core.errors import InvalidInput

config_app = typer.Typer(help="Write, read, list and delete config entries (service-intentions).",
                         no_args_is_help=True)


@config_app.command("write")
def config_write(
    path: str = typer.Argument(..., help="A JSON file with the entry, or '-' for standard input."),
    cas: bool = typer.Option(False, "-cas", "--cas", help="Write only if -modify-index is the entry's."),
    modify_index: int = typer.Option(0, "-modify-index", "--modify-index", min=0, help="Index for -cas."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Create or replace a config entry. Exit 1 when a -cas write loses.

    Example:

      tether config write db-intentions.json

    with db-intentions.json: {"Kind": "service-intentions", "Name": "db",
    "Sources": [{"Name": "web", "Action": "allow"}]}
    """
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        entry = json.loads(text)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not JSON: {exc}") from None
    params = {"cas": str(modify_index)} if cas else {}
    if not client(http_addr, token, token_file).put("/v1/config", params=params, json=entry).json():
        print("Error! Did not write the config entry: CAS failed", file=sys.stderr)
        raise typer.Exit(1)
    out.print(f"Config entry written: {entry.get('Kind')}/{entry.get('Name')}", markup=False)


@config_app.command("read")
def config_read(
    kind: str = typer.Option(..., "-kind", "--kind", help="The entry's kind, e.g. service-intentions."),
    name: str = typer.Option(..., "-name", "--name", help="The entry's name."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Print one config entry as JSON. Exit 1 when there is none.

    Example:

      tether config read -kind service-intentions -name db
    """
    response = client(http_addr, token, token_file).get(f"/v1/config/{kind}/{name}", ok404=True)
    if response.status_code == 404:
        print(f"Error! {response.text.strip()}", file=sys.stderr)
        raise typer.Exit(1)
    print_json(response.json())


@config_app.command("list")
def config_list(
    kind: str = typer.Option(..., "-kind", "--kind", help="The kind to list, e.g. service-intentions."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Print the names of the entries of a kind.

    Example:

      tether config list -kind service-intentions
    """
    for found in client(http_addr, token, token_file).get(f"/v1/config/{kind}").json():
        out.print(found["Name"], markup=False, highlight=False)


@config_app.command("delete")
def config_delete(
    kind: str = typer.Option(..., "-kind", "--kind", help="The entry's kind."),
    name: str = typer.Option(..., "-name", "--name", help="The entry's name."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete a config entry (for service-intentions: every intention to the destination).

    Example:

      tether config delete -kind service-intentions -name db
    """
    client(http_addr, token, token_file).delete(f"/v1/config/{kind}/{name}")
    out.print(f"Config entry deleted: {kind}/{name}", markup=False)
