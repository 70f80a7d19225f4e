"""`tether operator raft list-peers`: the server set (docs/etcd.md)."""

from __future__ import annotations

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, print_json, print_table

operator_app = typer.Typer(help="Cluster operations.", no_args_is_help=True)
raft_app = typer.Typer(help="The server set (Consul's raft commands).", no_args_is_help=True)
operator_app.add_typer(raft_app, name="raft")


@raft_app.command("list-peers")
def list_peers(
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the servers: one row each, the elected one as leader (needs operator:read).

    On etcd these are the live `tether server` processes (their lease holds); on SQLite, the
    one server.

    Example:

      tether operator raft list-peers
    """
    config = client(http_addr, token, token_file).get("/v1/operator/raft/configuration").json()
    if as_json:
        print_json(config)
        return
    print_table(["Node", "ID", "Address", "State", "Voter", "RaftProtocol"],
                [(s["Node"], s["ID"], s["Address"], "leader" if s["Leader"] else "follower",
                  str(s["Voter"]).lower(), s["ProtocolVersion"]) for s in config["Servers"]])
