"""`tether kv get|put|delete`."""

from __future__ import annotations

import base64
import sys

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json

kv_app = typer.Typer(help="Read and write key/value configuration.", no_args_is_help=True)


@kv_app.command("get")
def kv_get(
    key: str = typer.Argument("", help="The key (or prefix with -recurse)."),
    recurse: bool = typer.Option(False, "-recurse", "--recurse", help="Print every key under the prefix."),
    keys: bool = typer.Option(False, "-keys", "--keys", help="List key names only."),
    detailed: bool = typer.Option(False, "-detailed", "--detailed", help="Print the full entry as JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Print a value. Exit 1 when the key does not exist.

    Examples:

      tether kv get greeting

      tether kv get -recurse config/
    """
    api = client(http_addr, token, token_file)
    params = {"keys": "true"} if keys else ({"recurse": "true"} if recurse else {})
    response = api.get(f"/v1/kv/{key}", params=params, ok404=True)
    if response.status_code == 404:
        print(f"Error! No key exists at: {key}", file=sys.stderr)
        raise typer.Exit(1)
    data = response.json()
    if keys:
        for name in data:
            out.print(name, markup=False, highlight=False)
        return
    for entry in data:
        if detailed:
            print_json(entry)
            continue
        value = base64.b64decode(entry["Value"]).decode("utf-8", "replace") if entry["Value"] else ""
        print(f"{entry['Key']}:{value}" if recurse else value)


@kv_app.command("put")
def kv_put(
    key: str = typer.Argument(..., help="The key."),
    value: str = typer.Argument("", help="The value; '-' reads standard input, '@FILE' reads a file."),
    flags: int = typer.Option(0, "-flags", "--flags", min=0, help="Opaque unsigned integer stored with the value."),
    cas: bool = typer.Option(False, "-cas", "--cas", help="Check-and-set with -modify-index."),
    modify_index: int = typer.Option(0, "-modify-index", "--modify-index", min=0, help="Index for -cas (0: create only)."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Store a value (up to 512 KiB). Exit 1 when a -cas write loses.

    Examples:

      tether kv put greeting hello

      tether kv put -cas -modify-index 0 lock/owner web-1

      tether kv put config/app @app.json
    """
    data = _read_value(value)
    params = {"flags": str(flags)} if flags else {}
    if cas:
        params["cas"] = str(modify_index)
    ok = client(http_addr, token, token_file).put(f"/v1/kv/{key}", params=params, content=data).json()
    if not ok:
        print(f"Error! Did not write to {key}: CAS failed", file=sys.stderr)
        raise typer.Exit(1)
    out.print(f"Success! Data written to: {key}", markup=False, highlight=False)


def _read_value(value: str) -> bytes:
    from tether.core.errors import InvalidInput

    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        try:
            with open(value[1:], "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise InvalidInput(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value.encode()


@kv_app.command("delete")
def kv_delete(
    key: str = typer.Argument(..., help="The key (or prefix with -recurse)."),
    recurse: bool = typer.Option(False, "-recurse", "--recurse", help="Delete every key under the prefix."),
    cas: bool = typer.Option(False, "-cas", "--cas", help="Delete only if -modify-index matches."),
    modify_index: int = typer.Option(0, "-modify-index", "--modify-index", min=0),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete a key or a prefix.

    Examples:

      tether kv delete greeting

      tether kv delete -recurse config/
    """
    params = {"recurse": "true"} if recurse else {}
    if cas:
        params["cas"] = str(modify_index)
    ok = client(http_addr, token, token_file).delete(f"/v1/kv/{key}", params=params).json()
    if not ok:
        print(f"Error! Did not delete {key}: CAS failed", file=sys.stderr)
        raise typer.Exit(1)
    out.print(f"Success! Deleted key: {key}", markup=False, highlight=False)
