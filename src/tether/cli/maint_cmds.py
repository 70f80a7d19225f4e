"""`tether maint` (node and service maintenance mode) and `tether reload`: Consul's `consul maint` and
`consul reload`, over the agent's API."""

from __future__ import annotations

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, out
from tether.core.errors import InvalidInput
from tether.core.maintenance import NODE_MAINTENANCE, SERVICE_MAINTENANCE_PREFIX


def maint(
    enable: bool = typer.Option(False, "-enable", "--enable", help="Put the node (or -service) in maintenance."),
    disable: bool = typer.Option(False, "-disable", "--disable", help="Take it out of maintenance."),
    reason: str = typer.Option("", "-reason", "--reason", help="Why (shown as the maintenance check's notes)."),
    service: str = typer.Option("", "-service", "--service", metavar="SERVICE_ID",
                                help="A local service instead of the whole node."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Put this node or one of its services in maintenance mode (critical: out of every
    healthy answer), take it out, or, with no flag, list what is in maintenance.

    Examples:

      tether maint -enable -reason "kernel upgrade"

      tether maint -enable -service web-1

      tether maint -disable
    """
    if enable and disable:
        raise InvalidInput("-enable and -disable cannot be combined")
    api = client(http_addr, token, token_file)
    if not enable and not disable:
        if reason or service:
            raise InvalidInput("-reason and -service need -enable or -disable")
        for check in api.get("/v1/agent/checks").json().values():
            if check["CheckID"] == NODE_MAINTENANCE:
                out.print(f"Node:\n  Name:   {check['Node']}\n  Reason: {check['Notes']}", markup=False)
            elif check["CheckID"].startswith(SERVICE_MAINTENANCE_PREFIX):
                out.print(f"Service:\n  ID:     {check['ServiceID']}\n  Reason: {check['Notes']}", markup=False)
        return
    params = {"enable": "true" if enable else "false", "reason": reason or None}
    path = f"/v1/agent/service/maintenance/{service}" if service else "/v1/agent/maintenance"
    api.put(path, params=params)
    what = f"service {service!r}" if service else "node"
    out.print(f"{what[0].upper() + what[1:]} maintenance is now {'enabled' if enable else 'disabled'}", markup=False)


def reload(http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """Make the local agent re-read its config files, as SIGHUP does (Consul's `consul reload`).
    Exit 2 with the reason when a file no longer parses (the running configuration stays).

    Example:

      tether reload
    """
    client(http_addr, token, token_file).put("/v1/agent/reload")
    out.print("Configuration reload triggered", markup=False)
