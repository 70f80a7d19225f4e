"""The egress proxy as a process: static config (`-config FILE`) or fed by the local agent.

    python -m tether.proxy.egress -config sidecar.json            # static: tests, benchmarks
    python -m tether.proxy.egress -service ratings -outbound 127.0.0.1:15001 [-http-addr ...]
    tether proxy -gateway egress ...                              # the gateway (cli/gateway_cmds.py)

Prints one line `READY outbound=host:port gateway=host:port admin=host:port` on stderr once
every listener is bound (callers wait for it instead of sleeping). SIGTERM/SIGINT drain
(stop accepting, let connections finish for up to DRAIN_TIMEOUT, exit 0); with a static
config, SIGHUP re-reads the config's egress file and TLS files and applies them live
(a reload that fails keeps the running state and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from typing import TextIO

from tether.core.errors import TetherError
from tether.proxy.egress.agent import AgentFeed
from tether.sdk.addr import resolve_token
from tether.proxy.egress.config import EgressConfig, load_egress_config
from tether.proxy.egress.proxy import EgressProxy

log = logging.getLogger("tether.proxy.egress")

DRAIN_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Listen:
    """What to serve, whatever the source of state."""

    outbound: tuple[str, int] | None = None
    gateway: tuple[str, int] | None = None
    admin: tuple[str, int] | None = None


def open_log(path: str | None) -> TextIO | None:
    if path is None:
        return None
    return sys.stdout if path == "-" else open(path, "a", buffering=1 << 16)


async def _open(px: EgressProxy, listen: Listen) -> str:
    ready = []
    if listen.outbound:
        ready.append("outbound=%s:%s" % await px.open_outbound(*listen.outbound))
    if listen.gateway:
        ready.append("gateway=%s:%s" % await px.open_gateway(*listen.gateway))
    if listen.admin:
        ready.append("admin=%s:%s" % await px.open_admin(*listen.admin))
    return "READY " + " ".join(ready)


async def _serve(px: EgressProxy, listen: Listen, on_hup=None, on_ready=None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    line = await _open(px, listen)
    if on_ready is not None:
        await on_ready()
    print(line, file=sys.stderr, flush=True)
    await stop.wait()
    cut = await px.drain(DRAIN_TIMEOUT)
    log.info("egress proxy stopped; %d connection(s) cut at the drain deadline", cut)
    return 0


async def serve_static(cfg: EgressConfig, path: str, listen: Listen | None = None) -> int:
    stream = open_log(cfg.access_log_path)
    px = EgressProxy(cfg.tls.load(), service=cfg.service, snapshot=cfg.load_registry(), mesh=cfg.mesh,
                     access_log=stream, log_format=cfg.access_log_format, connect_timeout=cfg.connect_timeout,
                     handshake_timeout=cfg.handshake_timeout, peek_timeout=cfg.peek_timeout)

    def reload() -> None:
        try:
            new = load_egress_config(path)
            px.update_tls(new.tls.load())
            px.update_registry(new.load_registry())
            px.update_mesh(new.mesh)
        except (TetherError, OSError) as e:
            log.error("reload of %s failed (%s); keeping the running config", path, e)
            return
        log.info("reloaded %s", path)
        print(f"RELOADED {path}", file=sys.stderr, flush=True)

    try:
        return await _serve(px, listen or Listen(cfg.outbound, cfg.gateway, cfg.admin), reload)
    finally:
        if stream not in (None, sys.stdout):
            stream.close()


async def serve_agent(service: str, listen: Listen, *, http_addr: str | None, token: str | None,
                      access_log: str | None, log_format: str, virtual_ips: bool,
                      register: tuple[str, int] | None = None) -> int:
    """Serve from the agent's state; with `register`, register as a Connect-native instance
    of `service` at that address once listening, and deregister on the way out."""
    feed = AgentFeed(http_addr, service, token=token, virtual_ips=virtual_ips)
    stream = open_log(access_log)
    registered = []

    async def on_ready() -> None:
        if register is not None:
            await feed.client.put("/v1/agent/service/register", registration(service, *register))
            registered.append(service)
            log.info("registered %s at %s:%d with the agent at %s", service, *register, feed.client.addr)

    try:
        await feed.start()
        px = EgressProxy(feed.material(), service=service, snapshot=feed.snapshot, mesh=feed.mesh(),
                         access_log=stream, log_format=log_format)
        feed.attach(px)
        return await _serve(px, listen, on_ready=on_ready)
    finally:
        if registered:
            try:
                await feed.client.put(f"/v1/agent/service/deregister/{service}")
            except TetherError as e:
                log.warning("could not deregister %s: %s", service, e)
        await feed.close()
        if stream not in (None, sys.stdout):
            stream.close()


def registration(service: str, host: str, port: int) -> dict:
    """The gateway's catalog entry: a Connect-native instance (it terminates mesh mTLS itself)."""
    return {"Name": service, "ID": service, "Address": host, "Port": port, "Connect": {"Native": True},
            "Meta": {"tether-gateway": "egress"},
            # It is listening already, so the check starts passing: sidecars find it at once.
            "Check": {"Name": "egress gateway listener", "TCP": f"{host}:{port}", "Interval": "10s",
                      "Status": "passing"}}


def run(coro_fn, loop_kind: str = "uvloop") -> int:
    """Run `coro_fn()` on uvloop (or asyncio when uvloop is missing or not wanted)."""
    if loop_kind == "uvloop":
        try:
            import uvloop

            return uvloop.run(coro_fn())
        except ImportError:
            log.warning("uvloop is not installed; using the asyncio event loop")
    return asyncio.run(coro_fn())


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tether.proxy.egress", description=__doc__.split("\n")[0])
    ap.add_argument("-config", help="static JSON config (see tether.proxy.egress.config)")
    ap.add_argument("-service", help="our service: the sidecar's, or the gateway's own (agent mode)")
    ap.add_argument("-outbound", type=_hostport, help="transparent listener HOST:PORT")
    ap.add_argument("-gateway", type=_hostport, help="egress gateway listener HOST:PORT")
    ap.add_argument("-register", type=_hostport, metavar="IP:PORT",
                    help="register the gateway with the agent at this address (deregistered on exit)")
    ap.add_argument("-admin", type=_hostport, help="metrics HOST:PORT")
    ap.add_argument("-http-addr", default=None, help="the local agent (default $TETHER_HTTP_ADDR or 127.0.0.1:8500)")
    ap.add_argument("-token", default=None, help="ACL token (default $TETHER_HTTP_TOKEN, $CONSUL_HTTP_TOKEN, _FILE forms)")
    ap.add_argument("-token-file", default=None, help="read the ACL token from this file")
    ap.add_argument("-access-log", default="-", help="file, or - for stdout (agent mode)")
    ap.add_argument("-log-format", default="text", choices=("json", "text"))
    ap.add_argument("-log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            cfg = load_egress_config(args.config)
            cfg.tls.load()
            listen = Listen(args.outbound or cfg.outbound, args.gateway or cfg.gateway, args.admin or cfg.admin)
            return run(lambda: serve_static(cfg, args.config, listen), cfg.loop)
        if not args.service or not (args.outbound or args.gateway):
            ap.error("give -config FILE, or -service NAME with -outbound and/or -gateway HOST:PORT (agent mode)")
        listen = Listen(outbound=args.outbound, gateway=args.gateway, admin=args.admin)
        token = resolve_token(args.token, args.token_file)
        return run(lambda: serve_agent(args.service, listen, http_addr=args.http_addr, token=token,
                                       access_log=args.access_log, log_format=args.log_format,
                                       virtual_ips=bool(args.outbound), register=args.register))
    except TetherError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a port in use, or the agent unreachable or too slow (TimeoutError)
        print(f"error: {e}", file=sys.stderr)
        return 2
