"""`tether connect proxy`: Tether's built-in proxy, as a managed sidecar or run by hand.

    tether connect proxy -sidecar-for web                        # what the agent runs per sidecar
    tether connect proxy -service mitchellh -upstream postgresql:9191
    tether connect proxy -service web -listen :8443 -service-addr 127.0.0.1:8080 -register

Flags follow `consul connect proxy` (single or double dash). The proxy process must stay
small (35 MB idle): `tether`'s Typer app imports pydantic, httpx and rich, so the Typer
command registered by `register(connect_app)` only hands its arguments over, replacing
itself (exec, same PID, so the agent's SIGTERM still reaches it) with `python -m
tether.cli.proxy_cmds ...`, whose imports are argparse, asyncio and tether.proxy.
Exit codes: 0 after a drain, 2 for bad flags or an unreachable agent (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Mapping, Sequence

USAGE_EXAMPLES = """examples:
  tether connect proxy -sidecar-for web
  tether connect proxy -service mitchellh -upstream postgresql:9191
  tether connect proxy -service web -listen :8443 \\
      -service-addr 127.0.0.1:8080 -register"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tether connect proxy", description="Run Tether's mutual-TLS proxy for a service, fed by the local agent.",
        epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add = p.add_argument
    add("-sidecar-for", "--sidecar-for", dest="sidecar_for", default="", metavar="ID",
        help="run the sidecar of this service ID (env CONNECT_SIDECAR_FOR)")
    add("-proxy-id", "--proxy-id", dest="proxy_id", default="", metavar="ID",
        help="run the connect-proxy registered under this ID (env CONNECT_PROXY_ID)")
    add("-service", "--service", default="", metavar="NAME",
        help="unregistered proxy: the agent issues a leaf for NAME (it need not be registered)")
    add("-upstream", "--upstream", action="append", default=[], metavar="NAME:PORT",
        help="with -service: listen on 127.0.0.1:PORT for NAME (repeatable)")
    add("-listen", "--listen", default="", metavar="ADDR:PORT", help="with -service: the public mTLS listener")
    add("-service-addr", "--service-addr", dest="service_addr", default="", metavar="HOST:PORT",
        help="with -listen: where the local service listens")
    add("-register", "--register", action="store_true",
        help="with -listen: register this proxy with the agent so other services find it")
    add("-register-id", "--register-id", dest="register_id", default="", metavar="ID",
        help="the ID -register uses (default <service>-proxy)")
    add("-log-format", "--log-format", dest="log_format", choices=("json", "text"), default="json",
        help="access-log format on stderr (default json)")
    add("-log-level", "--log-level", dest="log_level", default="",
        help="process log level (default $TETHER_LOG_LEVEL, else INFO)")
    add("-admin-bind", "--admin-bind", dest="admin_bind", default="", metavar="ADDR:PORT",
        help="metrics and readiness endpoint (default Proxy.Config admin_bind, else 127.0.0.1:0)")
    add("-drain-timeout", "--drain-timeout", dest="drain_timeout", type=float, default=5.0, metavar="SECONDS",
        help="on SIGTERM, how long open connections may finish (default 5)")
    add("-http-addr", "--http-addr", dest="http_addr", default="", metavar="HOST:PORT",
        help="the local agent (default $TETHER_HTTP_ADDR, then $CONSUL_HTTP_ADDR, then 127.0.0.1:8500)")
    add("-token", "--token", default="", help="ACL token with service:write on the proxy's service "
        "(default $TETHER_HTTP_TOKEN, $CONSUL_HTTP_TOKEN, or their _FILE forms)")
    add("-token-file", "--token-file", dest="token_file", default="", metavar="FILE",
        help="read the ACL token from FILE (keeps it out of ps and shell history)")
    return p


def options_from(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """SidecarOptions from parsed flags; the environment fills only what no flag chose."""
    from tether.core.errors import InvalidInput
    from tether.proxy.sidecar import SidecarOptions
    from tether.proxy.sidecar_config import parse_host_port

    chosen = [f for f, v in (("-sidecar-for", args.sidecar_for), ("-proxy-id", args.proxy_id),
                             ("-service", args.service)) if v]
    if len(chosen) > 1:
        raise InvalidInput(f"{' and '.join(chosen)} exclude each other: give one")
    sidecar_for, proxy_id = args.sidecar_for, args.proxy_id
    if not chosen:  # the agent's supervisor sets both; the proxy ID is the more exact
        proxy_id = env.get("CONNECT_PROXY_ID", "")
        sidecar_for = "" if proxy_id else env.get("CONNECT_SIDECAR_FOR", "")
    if not (sidecar_for or proxy_id or args.service):
        raise InvalidInput("say which proxy to run: -sidecar-for SERVICE_ID, -proxy-id PROXY_ID or -service NAME")
    if not args.service and (args.upstream or args.listen or args.service_addr or args.register):
        raise InvalidInput("-upstream, -listen, -service-addr and -register are for -service; "
                           "a registered proxy reads them from its registration")
    from tether.sdk.addr import resolve_token

    addr = args.http_addr or env.get("TETHER_HTTP_ADDR") or env.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
    token = resolve_token(args.token, args.token_file, env)
    admin = parse_host_port(args.admin_bind, "-admin-bind", default_host="127.0.0.1") if args.admin_bind else None
    return SidecarOptions(
        agent_addr=addr, token=token, sidecar_for=sidecar_for,
        proxy_id=proxy_id, service=args.service, upstreams=tuple(args.upstream), listen=args.listen,
        service_addr=args.service_addr, register=args.register, register_id=args.register_id,
        log_format=args.log_format, admin_bind=admin, drain_timeout=args.drain_timeout)


async def serve(options: Any) -> int:
    """Run the sidecar until SIGTERM/SIGINT, then drain. Prints the READY line on stderr."""
    from tether.proxy.sidecar import Sidecar

    sidecar = Sidecar(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sidecar.start()
        print(f"{sidecar.ready_line()} service={sidecar.plan.service} pid={os.getpid()}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        cut = await sidecar.stop()
    logging.getLogger("tether.proxy.sidecar").info("stopped; %d connection(s) cut at the drain deadline", cut)
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = build_parser().parse_args(argv)
    level = (args.log_level or env.get("TETHER_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tether.core.errors import TetherError

    try:
        options = options_from(args, env)
        run = asyncio.run
        try:
            import uvloop  # the proxy's event loop of choice (DESIGN.md); asyncio works too

            run = uvloop.run
        except ImportError:
            pass
        return run(serve(options))
    except TetherError as e:
        print(f"tether connect proxy: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a port already in use
        print(f"tether connect proxy: {e}", file=sys.stderr)
        return 2


def register(connect_app: Any) -> None:
    """Add `proxy` to `tether connect`; it execs the lean entry point with the same arguments."""
    import typer

    def proxy(ctx) -> None:  # type: ignore[no-untyped-def]
        argv = [sys.executable, "-m", "tether.cli.proxy_cmds", *ctx.args]
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(sys.executable, argv)
        except OSError:  # no exec (unusual platforms): run in this process instead
            raise typer.Exit(main(ctx.args))

    # Set here, not as an annotation: this module's annotations are strings (postponed) and
    # typer resolves them in module globals, where typer is deliberately not imported.
    proxy.__annotations__ = {"ctx": typer.Context, "return": None}
    connect_app.command("proxy", add_help_option=False, help=build_parser().description + " (-h for flags)",
                        context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(proxy)


if __name__ == "__main__":
    sys.exit(main())
