"""`tether proxy -gateway egress`: run the egress gateway (data plane, tether.proxy.egress)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from tether.cli.common import HttpAddr, Token, client

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
    http_addr: str = HttpAddr, token: str = Token,
) -> int:
    """Run a gateway proxy. Only the egress gateway exists: sidecars send the traffic of
    external services with `egressGateway` to it over mutual TLS, and it forwards (or
    originates TLS) to the external hosts its registry allows, per source service.

    Examples:

      tether proxy -gateway egress -register -address 10.0.0.9:8443

      tether proxy -gateway egress -config gateway.json
    """
    from tether.proxy.egress import run as egress_run

    if gateway not in GATEWAY_KINDS:
        raise typer.BadParameter(f"{gateway!r}: only 'egress' is supported (mesh, ingress and terminating "
                                 "gateways are not implemented)", param_hint="-gateway")
    if log_format not in ("text", "json"):
        raise typer.BadParameter(f"{log_format!r}: use text or json", param_hint="-log-format")
    advertised = _hostport(address, "-address") if address else None
    if register and advertised is None:
        raise typer.BadParameter("-register needs -address IP:PORT (where sidecars reach the gateway)")
    bind = _hostport(bind_address, "-bind-address") if bind_address else \
        ("0.0.0.0", advertised[1] if advertised else DEFAULT_GATEWAY_PORT)
    admin = _hostport(admin_bind, "-admin-bind") if admin_bind else None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config is not None:
        if register:
            raise typer.BadParameter("-register needs the agent; it cannot be combined with -config")
        from tether.proxy.egress.config import load_egress_config

        cfg = load_egress_config(config)
        cfg.tls.load()
        listen = egress_run.Listen(gateway=cfg.gateway or bind, admin=admin or cfg.admin)
        return egress_run.run(lambda: egress_run.serve_static(cfg, str(config), listen), cfg.loop)
    agent = client(http_addr, token)
    registered = []

    async def on_ready() -> None:
        if register:
            host, port = advertised
            agent.put("/v1/agent/service/register", json={
                "Name": service, "ID": service, "Address": host, "Port": port, "Connect": {"Native": True},
                "Meta": {"tether-gateway": "egress"},
                "Check": {"Name": "egress gateway listener", "TCP": f"{host}:{port}", "Interval": "10s",
                          "Status": "passing"}})  # it is listening already: no critical window
            registered.append(service)

    listen = egress_run.Listen(gateway=bind, admin=admin)
    try:
        return egress_run.run(lambda: egress_run.serve_agent(
            service, listen, http_addr=http_addr, token=token, access_log=access_log, log_format=log_format,
            virtual_ips=False, on_ready=on_ready))
    finally:
        if registered:
            agent.put(f"/v1/agent/service/deregister/{service}")
