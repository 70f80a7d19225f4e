"""`tether agent` and `tether server`: start the long-running processes."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

import typer


def _default_policy(value: str | None) -> str | None:
    """Validate -default-policy early, so a typo exits 2 before anything starts."""
    if value is not None and value not in ("allow", "deny"):
        raise typer.BadParameter(f"unknown default policy {value!r}; use allow or deny", param_hint="-default-policy")
    return value


_DEFAULT_POLICY_HELP = ("The mesh default intention when no intention matches: allow or deny "
                        "(a new store starts with {}; an explicit value replaces the stored one).")

def _banner(role: str, data_dir: Path | None, ephemeral: bool) -> Callable[[str, str], None]:
    def on_ready(url: str, dns_addr: str) -> None:
        where = "in memory (ephemeral: everything is lost on exit; pass -data-dir to keep it)" if ephemeral \
            else f"in {data_dir}"
        print(f"==> Tether {role} is running. HTTP API: {url}", flush=True)
        if dns_addr:
            host, port = dns_addr.rsplit(":", 1)
            print(f"    DNS: {dns_addr} (try: dig @{host} -p {port} web.service.tether)", flush=True)
        print(f"    State is kept {where}.", flush=True)
        if role != "server":
            print("    Try, in another terminal:", flush=True)
            print("      tether services register examples/web.json", flush=True)
            print("      tether catalog services", flush=True)
            print("      tether kv put greeting hello && tether kv get greeting", flush=True)
    return on_ready


def agent(
    dev: bool = typer.Option(False, "-dev", "--dev", help="Run server and agent in one process (development)."),
    server_addr: str = typer.Option("", "-server-addr", "--server-addr", metavar="HOST:PORT",
                                    help="The Tether server this agent joins (not with -dev)."),
    http_port: int = typer.Option(8500, "-http-port", "--http-port", min=0, max=65535, help="HTTP API port."),
    http_host: str = typer.Option("127.0.0.1", "-client", "--client", "-http-host", "--http-host",
                                  help="Address the HTTP API binds to."),
    data_dir: Path = typer.Option(None, "-data-dir", "--data-dir", help="Keep state here (dev: default is memory)."),
    node: str = typer.Option(socket.gethostname(), "-node", "--node", help="This node's name."),
    datacenter: str = typer.Option("dc1", "-datacenter", "--datacenter", help="Datacenter name."),
    advertise: str = typer.Option("127.0.0.1", "-advertise", "--advertise", help="Address other nodes use for this one."),
    no_managed_proxies: bool = typer.Option(False, "-no-managed-proxies", "--no-managed-proxies",
                                            help="Do not start sidecar proxies for registered services."),
    dns_port: int = typer.Option(8600, "-dns-port", "--dns-port", min=-1, max=65535,
                                 help="DNS interface port (UDP, on the -client address); -1 turns DNS off."),
    default_policy: str = typer.Option(None, "-default-policy", "--default-policy", metavar="allow|deny",
                                       callback=_default_policy, help=_DEFAULT_POLICY_HELP.format("allow; -dev only")),
) -> None:
    """Run a Tether agent.

    Examples:

      tether agent -dev                                  # laptop: server + agent, API on 127.0.0.1:8500

      tether agent -dev -data-dir /var/lib/tether        # same, state survives restarts

      tether agent -server-addr 10.0.0.5:8500 -node web1 # a node joining a server
    """
    if dev and server_addr:
        raise typer.BadParameter("give -dev or -server-addr, not both")
    if not dev and not server_addr:
        raise typer.BadParameter("give -server-addr HOST:PORT (a node agent) or -dev (server + agent in one)")
    if default_policy and not dev:
        raise typer.BadParameter("only with -dev; a node agent follows its server's setting", param_hint="-default-policy")
    from tether import daemon  # the server stack is heavy; client commands never import it

    role = "dev" if dev else "agent"
    opts = daemon.Options(role=role, http_host=http_host, http_port=http_port, data_dir=data_dir,
                          server_addr=server_addr, node=node, datacenter=datacenter, advertise=advertise,
                          managed_proxies=not no_managed_proxies, dns_port=dns_port, default_policy=default_policy)
    daemon.run(opts, _banner("dev agent" if dev else "agent", data_dir, dev and data_dir is None))


def server(
    data_dir: Path = typer.Option(..., "-data-dir", "--data-dir", help="Where the server keeps its state (SQLite)."),
    http_port: int = typer.Option(8500, "-http-port", "--http-port", min=0, max=65535, help="HTTP API port."),
    http_host: str = typer.Option("127.0.0.1", "-client", "--client", "-http-host", "--http-host",
                                  help="Address the HTTP API binds to (0.0.0.0 to serve other nodes)."),
    datacenter: str = typer.Option("dc1", "-datacenter", "--datacenter", help="Datacenter name."),
    default_policy: str = typer.Option(None, "-default-policy", "--default-policy", metavar="allow|deny",
                                       callback=_default_policy, help=_DEFAULT_POLICY_HELP.format("deny")),
) -> None:
    """Run the Tether control plane (catalog, health, KV, CA, intentions).

    Example:

      tether server -data-dir /var/lib/tether -client 0.0.0.0
    """
    from tether import daemon

    opts = daemon.Options(role="server", http_host=http_host, http_port=http_port, data_dir=data_dir,
                          datacenter=datacenter, default_policy=default_policy)
    daemon.run(opts, _banner("server", data_dir, False))



