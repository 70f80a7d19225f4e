"""`tether connect ...`: redirect-traffic (transparent proxying)."""

from __future__ import annotations

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, out
from tether.core.redirect import DEFAULT_OUTBOUND_PORT, RedirectConfig

connect_app = typer.Typer(help="Connect the mesh to applications: proxies and traffic redirection.",
                          no_args_is_help=True)


@connect_app.command("redirect-traffic")
def redirect_traffic(
    proxy_id: str = typer.Option("", "-proxy-id", "--proxy-id", help="Read ports from this proxy's registration."),
    proxy_uid: int = typer.Option(-1, "-proxy-uid", "--proxy-uid", help="The proxy's user ID (its traffic is exempt)."),
    inbound_port: int = typer.Option(0, "-proxy-inbound-port", "--proxy-inbound-port",
                                     help="The proxy's public listener (default: from -proxy-id)."),
    outbound_port: int = typer.Option(0, "-proxy-outbound-port", "--proxy-outbound-port",
                                      help=f"The proxy's outbound listener (default {DEFAULT_OUTBOUND_PORT})."),
    exclude_inbound_port: list[int] = typer.Option([], "-exclude-inbound-port", "--exclude-inbound-port",
                                                   metavar="PORT", help="Do not redirect this inbound port (repeatable)."),
    exclude_outbound_port: list[int] = typer.Option([], "-exclude-outbound-port", "--exclude-outbound-port",
                                                    metavar="PORT",
                                                    help="Do not redirect this outbound port (repeatable)."),
    exclude_cidr: list[str] = typer.Option([], "-exclude-outbound-cidr", "-exclude-cidr", metavar="CIDR",
                                           help="Do not redirect traffic to this network (repeatable)."),
    exclude_uid: list[int] = typer.Option([], "-exclude-uid", "--exclude-uid", metavar="UID",
                                          help="Do not redirect this user's traffic (repeatable)."),
    dns_address: str = typer.Option("", "-dns-address", "--dns-address", help="Send DNS (udp/53) here (IP[:PORT])."),
    cleanup: bool = typer.Option(False, "-cleanup", "--cleanup", help="Remove the rules instead."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Redirect this network namespace's TCP through a sidecar proxy (iptables; needs root).

    Examples:

      tether connect redirect-traffic -proxy-id web-sidecar-proxy -proxy-uid 1234

      tether connect redirect-traffic -proxy-uid 1234 -proxy-inbound-port 20000 -exclude-cidr 10.0.0.0/8

      tether connect redirect-traffic -cleanup
    """
    from tether.agent.redirect import cleanup_redirect, install_redirect

    if cleanup:
        script = cleanup_redirect()
        out.print("Removed the traffic redirection rules." if script else "No traffic redirection rules were installed.")
        return
    if proxy_uid < 0:
        raise typer.BadParameter("-proxy-uid is required: the proxy's own traffic must not be redirected to itself")
    if proxy_id:
        proxy = client(http_addr, token, token_file).get(f"/v1/agent/service/{proxy_id}").json()
        if proxy.get("Kind") != "connect-proxy":
            raise typer.BadParameter(f"{proxy_id!r} is not a connect-proxy registration")
        tproxy = proxy.get("Proxy", {}).get("TransparentProxy", {}) or {}
        inbound_port = inbound_port or proxy["Port"]
        outbound_port = outbound_port or int(tproxy.get("OutboundListenerPort") or DEFAULT_OUTBOUND_PORT)
    if not inbound_port:
        raise typer.BadParameter("give -proxy-id, or -proxy-inbound-port for an unregistered proxy")
    config = RedirectConfig(proxy_uid=proxy_uid, inbound_port=inbound_port,
                            outbound_port=outbound_port or DEFAULT_OUTBOUND_PORT,
                            exclude_inbound_ports=tuple(exclude_inbound_port),
                            exclude_outbound_ports=tuple(exclude_outbound_port),
                            exclude_outbound_cidrs=tuple(exclude_cidr), exclude_uids=tuple(exclude_uid),
                            dns_address=dns_address)
    install_redirect(config)
    out.print(f"Redirecting outbound TCP to port {config.outbound_port} and inbound TCP to port "
              f"{config.inbound_port} (proxy uid {proxy_uid} exempt). Undo with: tether connect redirect-traffic -cleanup")


# `tether connect proxy` lives in its own module (a lean process: see proxy_cmds).
from tether.cli import proxy_cmds  # noqa: E402

proxy_cmds.register(connect_app)
