"""Process assembly: the store, control plane, agent and HTTP API for each role.

    tether agent -dev          server + agent in one process (SQLite with -data-dir,
                               otherwise an ephemeral in-memory store)
    tether server -data-dir D  the control plane alone
    tether agent -server-addr  a node agent that forwards non-agent requests to a server
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
import uvicorn
from fastapi import Depends, FastAPI

from tether import __version__
from tether.agent.acl import AgentAclResolver, AgentTokens, LocalTokens, RemoteAuthorizers
from tether.agent.agent import Agent, AgentConfig
from tether.agent.api import agent_router, forward_router
from tether.agent.authz_api import authz_router
from tether.agent.ops_api import ops_router
from tether.agent.connect_api import connect_router
from tether.agent.dns import open_dns
from tether.agent.leafcache import LeafCache
from tether.agent.link import HttpLink, LocalLink
from tether.agent.config_services import ConfigServices
from tether.agent.server_pool import ServerPool
from tether.agent.supervisor import ProxySupervisor
from tether.api.acl import FilteredHeaderMiddleware
from tether.api.common import install_error_handlers
from tether.api.compat import PutPostAlias, UnimplementedRoutes, datacenter_dependency
from tether.api.guard import RequestGuard
from tether.api.openapi import install_openapi
from tether.api.shutdown import AnswerCutRequests
from tether.control.acl import AclConfig
from tether.control.acl_api import acl_router
from tether.control.api import server_router
from tether.control.ca_api import ca_router
from tether.control.egress_api import egress_router
from tether.control.intentions_api import intentions_router
from tether.control.server import ControlPlane, ServerConfig
from tether.control.config_api import config_router
from tether.control.event_api import event_router
from tether.control.session_api import session_router
from tether.control.snapshot_api import snapshot_router
from tether.control.status_api import StoreTruth, status_router
from tether.control.txn_api import txn_router
from tether.core.browserguard import BrowserPolicy
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS
from tether.core.errors import InvalidInput, TetherError
from tether.netutil import family_of, open_listen_socket
from tether.secretfile import write_private
from tether.store.datadir import prepare_data_dir
from tether.store.configured import open_configured_store

log = logging.getLogger("tether")


@dataclass
class Options:
    role: str  # "dev", "server" or "agent"
    http_host: str = "127.0.0.1"
    http_port: int = 8500
    data_dir: Path | None = None
    #: `-store etcd://h:p,...`: the shared store of several servers (None: SQLite in data_dir).
    store: str | None = None
    #: Seconds of the lease by which servers on one etcd elect the one doing singleton work.
    leader_lease_ttl: int = 10
    server_addr: str = ""
    node: str = field(default_factory=socket.gethostname)
    datacenter: str = "dc1"
    advertise: str = "127.0.0.1"
    managed_proxies: bool = True
    dns_port: int = 8600  # 0: any free port; -1: no DNS server
    #: Floor for the CA's LeafCertTTL; tests lower it to exercise renewal (docs/identity.md).
    ca_min_leaf_ttl: float = MIN_LEAF_TTL_SECONDS
    #: -default-policy allow|deny: the mesh default intention (None: keep the stored one; a new
    #: store starts with allow for the dev agent and deny for `tether server`).
    default_policy: str | None = None
    #: The `acl` block of the configuration (off unless a config file turns it on).
    acl: AclConfig = field(default_factory=AclConfig)
    node_meta: dict[str, str] = field(default_factory=dict)
    sidecar_port_range: tuple[int, int] | None = None
    #: Browser origins and Host names the API accepts besides its own (http_config).
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    #: Service definitions from config files: (file, definition), registered at start.
    services: tuple[tuple[str, dict[str, Any]], ...] = ()
    checks: tuple[tuple[str, dict[str, Any]], ...] = ()
    log_level: str | None = None
    #: Re-reads the config files (SIGHUP); None: nothing to reload.
    reload_config: Callable[[], Any] | None = None


def node_id(data_dir: Path | None) -> str:
    """A stable node ID: kept in the data dir so a restarted agent is the same node."""
    if data_dir is None:
        return str(uuid.uuid4())
    path = data_dir / "node-id"
    if path.exists():
        return path.read_text().strip()
    value = str(uuid.uuid4())
    write_private(path, f"{value}\n".encode())
    return value


def new_app(title: str, browser: BrowserPolicy | None = None) -> FastAPI:
    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(FilteredHeaderMiddleware)
    app.add_middleware(PutPostAlias)
    app.add_middleware(UnimplementedRoutes, store_of=lambda: getattr(getattr(app.state, "control_plane", None),
                                                                     "store", None))
    app.add_middleware(RequestGuard, browser=browser)  # outermost: refusals before routing (api/guard.py)
    return app


@contextlib.asynccontextmanager
async def open_runtime(opts: Options) -> AsyncIterator[FastAPI]:
    """Build and start everything for a role; yield the app; stop it all on exit."""
    if opts.role not in ("dev", "server", "agent"):
        raise InvalidInput(f"unknown role {opts.role!r}")
    if opts.role == "agent" and not opts.server_addr:
        raise InvalidInput("agent needs -server-addr HOST:PORT (or -dev for a one-process dev agent)")
    if opts.role == "agent" and opts.default_policy is not None:
        raise InvalidInput("-default-policy is the server's setting; a node agent follows its server")
    if opts.data_dir is not None:
        prepare_data_dir(opts.data_dir)  # 0700, or refused naming the fix (store/datadir.py)
    cp = agent = supervisor = None
    app = new_app(f"Tether {opts.role}", BrowserPolicy.build([opts.node, opts.http_host, *opts.allowed_hosts],
                                                             opts.allowed_origins))
    store = None
    link = None
    forwarding = None
    leaves = None
    try:
        if opts.role in ("dev", "server"):
            store = await open_configured_store(opts.store, opts.data_dir)
            cp = ControlPlane(store, ServerConfig(datacenter=opts.datacenter, ca_min_leaf_ttl=opts.ca_min_leaf_ttl,
                                                  default_intention=opts.default_policy,
                                                  initial_default_intention="deny" if opts.role == "server" else "allow",
                                                  acl=opts.acl, data_dir=opts.data_dir,
                                                  leader_lease_ttl=opts.leader_lease_ttl))
            await cp.start()
            if store.shared:
                app.add_middleware(StoreTruth, store=store)
            if opts.acl.enabled:
                app.state.acl = cp.acl
        resolver = tokens = None
        if opts.role in ("dev", "agent"):
            tokens = AgentTokens(opts.acl, opts.data_dir)
            local_tokens = LocalTokens(opts.data_dir)
            link = LocalLink(cp) if cp else HttpLink(opts.server_addr,
                                                     token=lambda: tokens.get("agent") or tokens.get("default"))
            resolver = AgentAclResolver(opts.acl, tokens, local_tokens, _acl_backend(cp, link, opts.acl),
                                        node=opts.node)
            if opts.acl.enabled:
                app.state.acl = resolver
            config = AgentConfig(node=opts.node, node_id=node_id(opts.data_dir), datacenter=opts.datacenter,
                                 advertise=opts.advertise, node_meta=dict(opts.node_meta))
            if opts.sidecar_port_range is not None:
                config.sidecar_port_range = opts.sidecar_port_range
            agent = Agent(config, link, local_tokens)
            tokens.on_change.append(lambda kind: agent.resync_soon() if kind in ("agent", "default") else None)
            if opts.managed_proxies:
                supervisor = ProxySupervisor(data_dir=opts.data_dir, secret_for=local_tokens.proxy_secret)
                agent.on_service_change.append(supervisor.on_service_change)
            await agent.start()
            app.include_router(agent_router(agent, is_server=cp is not None, tokens=tokens,
                                            effective_secret=resolver.effective_secret))
            app.include_router(authz_router(agent))
            app.include_router(ops_router(agent, functools.partial(reload, app, opts, strict=True),
                                          (lambda: cp.store.revision) if cp is not None else None))
            leaves = LeafCache(link, datacenter=opts.datacenter, namespace_of=agent.namespace_of)
            await leaves.start()
            app.include_router(connect_router(leaves, resolver.effective_secret))
            app.state.config_services = ConfigServices(agent, opts.acl)
            await app.state.config_services.apply(opts.services, opts.checks)
        if cp is not None:
            app.include_router(server_router(cp))
            local_dc = [Depends(datacenter_dependency(cp.datacenter))]  # ?dc= another datacenter: 500
            app.include_router(ca_router(cp), dependencies=local_dc)
            app.include_router(intentions_router(cp), dependencies=local_dc)
            app.include_router(egress_router(cp.egress), dependencies=local_dc)
            app.include_router(acl_router(cp.acl), dependencies=local_dc)
            app.include_router(session_router(cp, default_node=opts.node if opts.role == "dev" else ""))
            app.include_router(txn_router(cp))
            app.include_router(event_router(cp))
            app.include_router(config_router(cp))
            app.include_router(status_router(cp), dependencies=local_dc)
            app.include_router(snapshot_router(cp), dependencies=local_dc)
        else:
            assert resolver is not None
            forwarding = ServerPool(opts.server_addr, timeout=httpx.Timeout(None, connect=5.0))
            app.include_router(forward_router(forwarding, resolver.effective_secret, opts.node))
        app.state.control_plane, app.state.agent, app.state.supervisor = cp, agent, supervisor
        app.state.leaf_cache = leaves
        app.state.agent_tokens = tokens if agent is not None else None
        yield app
    finally:
        if supervisor is not None:  # a graceful stop has stopped them already (serve); a failure leaves them
            await supervisor.detach()
        if leaves is not None:
            await leaves.stop()
        if agent is not None:
            await agent.stop()
        if link is not None:
            await link.close()
        if forwarding is not None:
            await forwarding.close()
        if cp is not None:
            await cp.stop()
        if store is not None:
            await store.close()


def _acl_backend(cp: ControlPlane | None, link: HttpLink | LocalLink, acl: AclConfig):
    """How the agent resolves a token: in-process on a dev agent, cached over HTTP otherwise."""
    if cp is not None:
        return cp.acl.resolve
    assert isinstance(link, HttpLink)
    return RemoteAuthorizers(link.resolve_acl, acl).authorizer


async def serve(
    opts: Options,
    on_ready: Callable[[str, str], None] = lambda url, dns: None,
    *,
    stop: asyncio.Event | None = None,
    on_app: Callable[[FastAPI], None] = lambda app: None,
) -> None:
    """Run a role until SIGINT/SIGTERM, or until `stop` is set (tests run it in-process and
    get the app, for its store and agent, from `on_app`)."""
    async with open_runtime(opts) as app:
        on_app(app)
        # Agents keep blocking queries open (CA roots, for minutes): on shutdown, give requests
        # a moment to finish, then cancel them (answered 503, api/shutdown.py), so SIGTERM
        # never waits for a 5-minute wait.
        config = uvicorn.Config(AnswerCutRequests(app), host=opts.http_host, port=opts.http_port, log_level="warning",
                                access_log=False, lifespan="off", loop="none", timeout_graceful_shutdown=1.0)
        server = uvicorn.Server(config)
        # Signals are ours (graceful_stop): uvicorn's own handlers would stop the API before the
        # sidecars have drained. Older uvicorn asks install_signal_handlers, newer capture_signals.
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task] = []

        def graceful_stop() -> None:
            if not stopping:  # later signals change nothing: the stop is under way
                stopping.append(loop.create_task(_stop_gracefully(app, server)))

        def stop_for_restart() -> None:
            # SIGUSR2: stop the agent but leave its sidecars serving; the next agent on the same
            # address and data dir adopts them (supervisor.detach). How an agent is restarted
            # with new settings (e.g. ACLs turned on) without a gap in traffic.
            if not stopping:
                log.info("SIGUSR2: stopping for a restart; the sidecars keep serving for the next agent to adopt")
                server.should_exit = True

        if stop is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, graceful_stop)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(app, opts)))
            loop.add_signal_handler(signal.SIGUSR2, stop_for_restart)
        else:
            loop.create_task(stop.wait()).add_done_callback(lambda _: graceful_stop())
        task = asyncio.create_task(server.serve(sockets=[_http_socket(opts)]))
        while not server.started:
            if task.done():
                await task  # surface a startup error
                raise OSError(f"the HTTP API on {opts.http_host}:{opts.http_port} did not start")
            await asyncio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        dns = None
        if app.state.agent is not None and opts.dns_port >= 0:
            try:
                tokens = app.state.agent_tokens
                dns, dns_port = await open_dns(opts.http_host, opts.dns_port, f"http://{host}:{port}", opts.datacenter,
                                               lambda: tokens.get("dns") or tokens.get("default"))
            except OSError as exc:
                server.should_exit = True
                await task
                raise OSError(exc.errno, f"{exc.strerror or exc}; use -dns-port to pick another port, "
                              "or -dns-port -1 to turn DNS off") from None
            app.state.dns_addr = f"{host}:{dns_port}"
        if app.state.supervisor is not None and not stopping:
            app.state.supervisor.start(f"{host}:{port}", app.state.agent.services)
        if app.state.control_plane is not None:  # peers and leader show this address
            shown = opts.advertise if host in ("0.0.0.0", "::") else host
            await app.state.control_plane.leadership.announce(f"{shown}:{port}")
        on_ready(f"http://{host}:{port}", getattr(app.state, "dns_addr", ""))
        try:
            await task
            await asyncio.gather(*stopping)  # done already when a signal ended the API
        finally:
            if dns is not None:
                await dns.close()


async def _stop_gracefully(app: FastAPI, server: uvicorn.Server) -> None:
    """SIGTERM/SIGINT: the sidecars drain and exit while the API still answers them, then the
    API stops (so no sidecar watch is cut by the server's shutdown)."""
    try:
        if app.state.supervisor is not None:
            await app.state.supervisor.stop_all()
    except Exception:  # stop anyway; say what went wrong
        log.exception("stopping the sidecars failed")
    finally:
        server.should_exit = True


def _http_socket(opts: Options) -> socket.socket:
    """The API's listening socket, bound here rather than by uvicorn so that a port in use is
    an OSError naming the address (uvicorn logs it and exits the process)."""
    host = opts.http_host
    if family_of(host) is None:  # a name such as localhost: its first address
        host = socket.getaddrinfo(host, opts.http_port, type=socket.SOCK_STREAM)[0][4][0]
    try:
        return open_listen_socket(host, opts.http_port)
    except OSError as exc:
        raise OSError(exc.errno, f"HTTP API: {exc.strerror or exc}; use -http-port to pick another port") from None


async def reload(app: FastAPI, opts: Options, *, strict: bool = False) -> None:
    """SIGHUP (and PUT /v1/agent/reload, `strict`): re-read the config files and apply their
    services and checks (Consul's reload).

    A file that no longer parses changes nothing: the error is logged and the running
    configuration stays; with `strict` the error is raised too, for the API to answer."""
    if opts.reload_config is None or getattr(app.state, "config_services", None) is None:
        log.info("reload: nothing to reload (no config files)")
        return
    try:
        files = opts.reload_config()
        await app.state.config_services.apply(files.services, files.checks)
    except TetherError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)
        if strict:
            raise ReloadFailed(f"Failed reloading config: {exc}") from exc
        return
    if files.log_level and not os.environ.get("TETHER_LOG_LEVEL"):
        logging.getLogger().setLevel(files.log_level.upper())
    log.info("configuration reloaded: %d service(s), %d check(s) from config files", len(files.services),
             len(files.checks))


class ReloadFailed(TetherError):
    """A reload asked through the API found a config file that does not parse (HTTP 500)."""


def run(opts: Options, on_ready: Callable[[str, str], None] = lambda url, dns: None) -> None:
    os.umask(0o077)  # whatever else this process writes is its own alone (docs/security.md)
    logging.basicConfig(level=(os.environ.get("TETHER_LOG_LEVEL") or opts.log_level or "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(opts, on_ready))
    else:
        uvloop.run(serve(opts, on_ready))
