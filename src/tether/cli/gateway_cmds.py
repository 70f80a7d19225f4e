"""`tether proxy -gateway egress`: run the egress gateway (data plane, tether.proxy.egress)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tether.cli.common import HttpAddr, Token, TokenFile
from tether.sdk.addr import resolve_addr, resolve_token

DEFAULT_GATEWAY_PORT = 8443
GATEWAY_KINDS = ("egress",)


def _hostport(value: str, flag: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise typer.BadParameter(f"{value!r} is not IP:PORT", param_hint=flag)
    return host.strip("[]"), int(port)


def proxy(
    gateway: str = typer.Option(..., "-gateway", "--gateway", metavar="egress", help="The gateway to run: egress."),
    service: str = typer.Option("egress-gateway", "-service", "--service",
                                help="The gateway's mesh service name (its SPIFFE identity)."),
    register: bool = typer.Option(False, "-register", "--register",
                                  help="Register the gateway with the local agent (deregistered on exit)."),
    address: str = typer.Option("", "-address", "--address", metavar="IP:PORT",
                                help="Address sidecars reach the gateway at (registered with -register)."),
    bind_address: str = typer.Option("", "-bind-address", "--bind-address", metavar="IP:PORT",
                                     help=f"Listen here (default 0.0.0.0 and the -address port, or {DEFAULT_GATEWAY_PORT})."),
    admin_bind: str = typer.Option("", "-admin-bind", "--admin-bind", metavar="IP:PORT",
                                   help="Serve /metrics and /ready here."),
    config: Path = typer.Option(None, "-config", "--config", help="Static JSON config instead of the agent."),
    access_log: str = typer.Option("-", "-access-log", "--access-log", help="Access-log file, or - for stdout."),
    log_format: str = typer.Option("text", "-log-format", "--log-format", metavar="text|json"),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> int:
    """Run a gateway proxy. Only the egress gateway exists: sidecars send the traffic of
    external services with `egressGateway` to it over mutual TLS, and it forwards (or
    originates TLS) to the external hosts its registry allows, per source service.

    Examples:

      tether proxy -gateway egress -register -address 10.0.0.9:8443

      tether proxy -gateway egress -config gateway.json
    """
    if gateway not in GATEWAY_KINDS:
        raise typer.BadParameter(f"{gateway!r}: only 'egress' is supported (mesh, ingress and terminating "
                                 "gateways are not implemented)", param_hint="-gateway")
    if log_format not in ("text", "json"):
        raise typer.BadParameter(f"{log_format!r}: use text or json", param_hint="-log-format")
    advertised = _hostport(address, "-address") if address else None
    if register and advertised is None:
        raise typer.BadParameter("-register needs -address IP:PORT (where sidecars reach the gateway)")
    bind = _hostport(bind_address, "-bind-address") if bind_address else None
    admin = _hostport(admin_bind, "-admin-bind") if admin_bind else None
    argv = ["-log-format", log_format, "-access-log", access_log]
    if admin:
        argv += ["-admin", "%s:%d" % admin]
    if config is not None:
        if register:
            raise typer.BadParameter("-register needs the agent; it cannot be combined with -config")
        from tether.proxy.egress.config import load_egress_config

        cfg = load_egress_config(config)  # report a bad file here, as one line, exit 2
        cfg.tls.load()
        if bind or cfg.gateway is None:
            argv += ["-gateway", "%s:%d" % (bind or ("0.0.0.0", DEFAULT_GATEWAY_PORT))]
        argv += ["-config", str(config)]
    else:
        bind = bind or ("0.0.0.0", advertised[1] if advertised else DEFAULT_GATEWAY_PORT)
        argv += ["-service", service, "-gateway", "%s:%d" % bind, "-http-addr", resolve_addr(http_addr)]
        token = resolve_token(token, token_file)
        if token:  # in the environment, not argv: the command line is visible to every user in ps
            os.environ["TETHER_HTTP_TOKEN"] = token
        argv += ["-register", "%s:%d" % advertised] if register else []
    # The gateway is a long-running data-plane process: replace this CLI process (same PID,
    # so signals reach it) with the lean entry point, which loads no Typer, Rich or httpx.
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tether.proxy.egress", *argv])
