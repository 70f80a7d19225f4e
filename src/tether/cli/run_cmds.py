"""`tether agent` and `tether server`: start the long-running processes.

Settings come from flags, then `-config-file` / `-config-dir` (Consul's keys; JSON or
HCL), then built-in defaults: a flag always wins over a file.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import typer

from tether.core.agent_config import FileConfig

_DEFAULT_POLICY_HELP = ("The mesh default intention when no intention matches: allow or deny "
                        "(a new store starts with {}; an explicit value replaces the stored one). "
                        "Config key: default_intention.")

ConfigFile = typer.Option([], "-config-file", "--config-file", metavar="FILE",
                          help="A configuration file (JSON or HCL, Consul's keys); repeatable, merged in order.")
ConfigDir = typer.Option([], "-config-dir", "--config-dir", metavar="DIR",
                         help="Every *.json and *.hcl file in DIR, in lexical order; repeatable.")
ConfigFormat = typer.Option("", "-config-format", "--config-format", metavar="json|hcl",
                            help="The format of config files whose names end in neither .json nor .hcl.")


def _default_policy(value: str | None) -> str | None:
    """Validate -default-policy early, so a typo exits 2 before anything starts."""
    if value is not None and value not in ("allow", "deny"):
        raise typer.BadParameter(f"unknown default policy {value!r}; use allow or deny", param_hint="-default-policy")
    return value


def _banner(role: str, data_dir: Path | None, ephemeral: bool, acl_enabled: bool) -> Callable[[str, str], None]:
    def on_ready(url: str, dns_addr: str) -> None:
        where = "in memory (ephemeral: everything is lost on exit; pass -data-dir to keep it)" if ephemeral \
            else f"in {data_dir}"
        print(f"==> Tether {role} is running. HTTP API: {url}", flush=True)
        if dns_addr:
            host, port = dns_addr.rsplit(":", 1)
            print(f"    DNS: {dns_addr} (try: dig @{host} -p {port} web.service.tether)", flush=True)
        print(f"    State is kept {where}.", flush=True)
        if not acl_enabled:
            print("    ACLs are off: any local process can obtain any service's identity; see docs/acl.md",
                  flush=True)
        if role != "server":
            print("    Try, in another terminal:", flush=True)
            print("      tether services register examples/web.json", flush=True)
            print("      tether catalog services", flush=True)
            print("      tether kv put greeting hello && tether kv get greeting", flush=True)
    return on_ready


def _files(config_file: list[Path], config_dir: list[Path], fmt: str) -> FileConfig:
    from tether.cli.config_files import load_config

    config, warnings = load_config(config_file, config_dir, fmt)
    for line in warnings:
        print(f"tether: warning: {line}", file=sys.stderr, flush=True)
    return config


def _pick(flag: Any, file_value: Any, default: Any) -> Any:
    return flag if flag is not None else (file_value if file_value is not None else default)


def agent(
    dev: bool = typer.Option(False, "-dev", "--dev", help="Run server and agent in one process (development)."),
    server_addr: str = typer.Option(None, "-server-addr", "--server-addr", "-retry-join", "--retry-join",
                                    metavar="HOST:PORT",
                                    help="The Tether server this agent joins (not with -dev). Config key: retry_join."),
    http_port: int = typer.Option(None, "-http-port", "--http-port", min=0, max=65535,
                                  help="HTTP API port (default 8500). Config key: ports.http."),
    http_host: str = typer.Option(None, "-client", "--client", "-http-host", "--http-host",
                                  help="Address the HTTP API binds to (default 127.0.0.1). Config key: client_addr."),
    data_dir: Path = typer.Option(None, "-data-dir", "--data-dir",
                                  help="Keep state here (dev: default is memory). Config key: data_dir."),
    node: str = typer.Option(None, "-node", "--node", help="This node's name (default the host name). "
                             "Config key: node_name."),
    datacenter: str = typer.Option(None, "-datacenter", "--datacenter", help="Datacenter name (default dc1). "
                                   "Config key: datacenter."),
    advertise: str = typer.Option(None, "-advertise", "--advertise",
                                  help="Address other nodes use for this one (default 127.0.0.1). "
                                       "Config key: advertise_addr."),
    no_managed_proxies: bool = typer.Option(None, "-no-managed-proxies", "--no-managed-proxies",
                                            help="Do not start sidecar proxies for registered services. "
                                                 "Config key: managed_proxies = false."),
    dns_port: int = typer.Option(None, "-dns-port", "--dns-port", min=-1, max=65535,
                                 help="DNS interface port (UDP, on the -client address; default 8600); "
                                      "-1 turns DNS off. Config key: ports.dns."),
    default_policy: str = typer.Option(None, "-default-policy", "--default-policy", metavar="allow|deny",
                                       callback=_default_policy, help=_DEFAULT_POLICY_HELP.format("allow; -dev only")),
    config_file: list[Path] = ConfigFile, config_dir: list[Path] = ConfigDir, config_format: str = ConfigFormat,
) -> None:
    """Run a Tether agent.

    Examples:

      tether agent -dev                                  # laptop: server + agent, API on 127.0.0.1:8500

      tether agent -dev -data-dir /var/lib/tether        # same, state survives restarts

      tether agent -server-addr 10.0.0.5:8500 -node web1 # a node joining a server

      tether agent -server-addr 10.0.0.5:8500 -config-file /etc/tether/acl.hcl

    Signals: SIGTERM/SIGINT stop the agent and its sidecars (they drain); SIGHUP reloads the
    config files; SIGUSR2 stops the agent but leaves its sidecars serving, for the next
    agent on the same address and data dir to adopt (a restart without a gap in traffic).
    """
    files = _files(config_file, config_dir, config_format)
    if files.server:
        raise typer.BadParameter("server = true: run the control plane with 'tether server' (a node agent "
                                 "joins it with retry_join)", param_hint="-config-file")
    server_addr = _pick(server_addr, files.retry_join[0] if files.retry_join else None, "")
    if dev and server_addr:
        raise typer.BadParameter("give -dev or -server-addr (retry_join), not both")
    if not dev and not server_addr:
        raise typer.BadParameter("give -server-addr HOST:PORT (a node agent) or -dev (server + agent in one)")
    default_policy = _pick(default_policy, files.default_intention, None)
    if default_policy and not dev:
        raise typer.BadParameter("only with -dev; a node agent follows its server's setting",
                                 param_hint="-default-policy")
    from tether import daemon  # the server stack is heavy; client commands never import it

    role = "dev" if dev else "agent"
    opts = _options(role, files, http_host=http_host, http_port=http_port, data_dir=data_dir,
                    datacenter=datacenter, dns_port=dns_port, default_policy=default_policy)
    opts = replace(opts, server_addr=server_addr, node=_pick(node, files.node_name, socket.gethostname()),
                   advertise=_pick(advertise, files.advertise_addr, "127.0.0.1"),
                   managed_proxies=not no_managed_proxies if no_managed_proxies is not None
                   else _pick(None, files.managed_proxies, True),
                   reload_config=lambda: _files(config_file, config_dir, config_format))
    daemon.run(opts, _banner("dev agent" if dev else "agent", opts.data_dir, dev and opts.data_dir is None,
                             opts.acl.enabled))


def server(
    data_dir: Path = typer.Option(None, "-data-dir", "--data-dir",
                                  help="Where the server keeps its state (SQLite). Config key: data_dir."),
    http_port: int = typer.Option(None, "-http-port", "--http-port", min=0, max=65535,
                                  help="HTTP API port (default 8500). Config key: ports.http."),
    http_host: str = typer.Option(None, "-client", "--client", "-http-host", "--http-host",
                                  help="Address the HTTP API binds to (0.0.0.0 to serve other nodes; default "
                                       "127.0.0.1). Config key: client_addr."),
    datacenter: str = typer.Option(None, "-datacenter", "--datacenter", help="Datacenter name (default dc1). "
                                   "Config key: datacenter."),
    default_policy: str = typer.Option(None, "-default-policy", "--default-policy", metavar="allow|deny",
                                       callback=_default_policy, help=_DEFAULT_POLICY_HELP.format("deny")),
    config_file: list[Path] = ConfigFile, config_dir: list[Path] = ConfigDir, config_format: str = ConfigFormat,
) -> None:
    """Run the Tether control plane (catalog, health, KV, CA, intentions, ACLs).

    Examples:

      tether server -data-dir /var/lib/tether -client 0.0.0.0

      tether server -config-file /etc/tether/server.hcl     # acl { enabled = true ... }
    """
    files = _files(config_file, config_dir, config_format)
    if files.services or files.checks:
        raise typer.BadParameter("service and check definitions belong to an agent's configuration; the server "
                                 "runs none", param_hint="-config-file")
    if data_dir is None and files.data_dir is None:
        raise typer.BadParameter("give -data-dir DIR (or data_dir in a config file): where the server keeps its "
                                 "state", param_hint="-data-dir")
    from tether import daemon

    opts = _options("server", files, http_host=http_host, http_port=http_port, data_dir=data_dir,
                    datacenter=datacenter, dns_port=-1, default_policy=_pick(default_policy, files.default_intention,
                                                                             None))
    daemon.run(opts, _banner("server", opts.data_dir, False, opts.acl.enabled))


def _options(role: str, files: FileConfig, *, http_host: str | None, http_port: int | None, data_dir: Path | None,
             datacenter: str | None, dns_port: int | None, default_policy: str | None) -> Any:
    from tether import daemon

    data = _pick(data_dir, Path(files.data_dir) if files.data_dir else None, None)
    if role != "agent":  # a node agent follows its server's default intention
        default_policy = default_policy or _acl_default_intention(files)
    return daemon.Options(
        role=role, http_host=_pick(http_host, files.http_addr or files.client_addr, "127.0.0.1"),
        http_port=_pick(http_port, files.http_port, 8500), data_dir=data,
        datacenter=_pick(datacenter, files.datacenter, "dc1"), dns_port=_pick(dns_port, files.dns_port, 8600),
        default_policy=default_policy, acl=files.acl, node_meta=files.node_meta,
        sidecar_port_range=files.sidecar_port_range, allowed_origins=tuple(files.allowed_origins),
        allowed_hosts=tuple(files.allowed_hosts), services=tuple(files.services), checks=tuple(files.checks),
        log_level=files.log_level)


def _acl_default_intention(files: FileConfig) -> str | None:
    """Consul's meaning: with ACLs on, acl.default_policy is also the intention default."""
    if files.acl.enabled and "default_policy" in files.acl_keys:
        print(f"tether: acl.default_policy = {files.acl.default_policy!r} also sets the mesh default intention "
              "(as in Consul); set default_intention to choose it separately", file=sys.stderr, flush=True)
        return files.acl.default_policy
    return None
