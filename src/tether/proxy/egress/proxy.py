"""`EgressProxy`: the transparent outbound listener and the egress gateway listener.

    px = EgressProxy(material, service="ratings", snapshot=EgressSnapshot.build(...),
                     mesh=[MeshService("egress-gateway", gw_id, (Instance("198.51.100.20", 8443),))],
                     access_log=sys.stdout, log_format="text")
    await px.open_outbound("127.0.0.1", 15001)     # a sidecar's transparent listener
    await px.open_gateway("0.0.0.0", 8443)         # or: this process is the egress gateway
    px.update_registry(snapshot); px.update_mesh(services); px.update_tls(material)
    await px.close()

Everything runs on the event loop of the first `open_*`. Each accepted connection gets one
setup coroutine (outbound.py / gateway.py) bounded by `setup_timeout`; after it, bytes
move on readiness callbacks (splice.py). Updates apply to new connections; live ones keep
the route they were given. Fail static: an update that raises leaves the current state.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable, Iterable, TextIO

from tether.core.admission import DEFAULT_MAX_PENDING_HANDSHAKES
from tether.core.external import EgressSnapshot
from tether.netutil import open_listen_socket, original_destination
from tether.proxy.accesslog import AccessLog
from tether.proxy.admission import HandshakeGate
from tether.proxy.egress.gateway import serve_gateway
from tether.proxy.egress.origin import OriginationContexts
from tether.proxy.egress.outbound import PEEK_TIMEOUT, serve_outbound, tls_ports
from tether.proxy.egress.routes import MeshRoutes, MeshService
from tether.proxy.egress.session import Session
from tether.proxy.egress.splice import Buffers, Splice
from tether.proxy.egress.stats import EgressStats, register_collector
from tether.proxy.egress.stream import SetupError
from tether.proxy.listener import ACCEPT_BATCH, RESOURCE_ERRORS, AcceptLoop
from tether.proxy.tls import TlsMaterial, build_contexts

log = logging.getLogger("tether.proxy.egress")

#: Consul's defaults: 5 s to connect, 10 s for a TLS handshake.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: The whole setup (peek, decide, dial, handshakes, SSLRequest dance) of one connection.
DEFAULT_SETUP_TIMEOUT = 30.0
DEFAULT_OUTBOUND_PORT = 15001
#: A connection one side of which has finished is closed after this long without traffic
#: (the engine's default too), so a peer that never closes cannot pin a socket forever.
DEFAULT_HALF_CLOSE_TIMEOUT = 60.0
SWEEP_INTERVAL = 1.0

Handler = Callable[["EgressProxy", Session, socket.socket], object]


class EgressProxy:
    def __init__(self, material: TlsMaterial, *, service: str, snapshot: EgressSnapshot | None = None,
                 mesh: Iterable[MeshService] = (), access_log: TextIO | None = None, log_format: str = "json",
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, peek_timeout: float = PEEK_TIMEOUT,
                 setup_timeout: float = DEFAULT_SETUP_TIMEOUT, idle_timeout: float | None = None,
                 half_close_timeout: float = DEFAULT_HALF_CLOSE_TIMEOUT,
                 max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES,
                 original_destination: Callable[[socket.socket], tuple[str, int]] = original_destination) -> None:
        self.contexts = build_contexts(material)
        self.material = material
        self.service = service  # our own service: the source of a sidecar's decisions
        self.snapshot = snapshot or EgressSnapshot.build(())
        self.tls_ports = tls_ports(self.snapshot)
        self.routes = MeshRoutes()
        self.routes.update(mesh)
        self.origination = OriginationContexts()
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.peek_timeout = peek_timeout
        self.setup_timeout = setup_timeout
        self.idle_timeout = idle_timeout  # None: an open, quiet connection lives until a side closes it
        self.half_close_timeout = half_close_timeout
        self.max_pending_handshakes = max_pending_handshakes  # the gateway listener's cap (core/admission.py)
        self.original_destination = original_destination
        self.stats = EgressStats()
        self.registry = register_collector(self.stats)
        self.access_log = AccessLog(access_log, log_format)
        self.bufs = Buffers()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listeners: list[_Listener] = []
        self.setups: set[asyncio.Task] = set()
        self.splices: set[Splice] = set()
        self._admin = None
        self._idle: asyncio.Event | None = None  # set while draining, once nothing is left
        self._sweeper: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ updates
    def update_tls(self, material: TlsMaterial) -> None:
        """New handshakes use `material`; InvalidInput (and no change) when it cannot be loaded."""
        self.contexts = build_contexts(material)
        self.material = material

    def update_registry(self, snapshot: EgressSnapshot) -> None:
        self.snapshot = snapshot
        self.tls_ports = tls_ports(snapshot)
        self.origination.clear()

    def update_mesh(self, services: Iterable[MeshService]) -> None:
        self.routes.update(services)

    # ------------------------------------------------------------------ listeners
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
            self.access_log.loop = loop
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
        return loop

    def _sweep_interval(self) -> float:
        shortest = min(t for t in (self.idle_timeout, self.half_close_timeout) if t)
        return max(0.01, min(SWEEP_INTERVAL, shortest / 4))

    def _sweep(self) -> None:
        """Close relays idle past idle_timeout, or half-closed and quiet past half_close_timeout."""
        now = self.loop.time()
        for splice in list(self.splices):
            quiet = splice.quiet_for(now)
            if self.idle_timeout and quiet >= self.idle_timeout:
                splice.finish("idle-timeout", f"no bytes either way for {self.idle_timeout:g}s")
            elif splice.half_closed and quiet >= self.half_close_timeout:
                splice.finish("allowed", f"half-closed and quiet for {self.half_close_timeout:g}s")
        self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    async def open_outbound(self, host: str = "127.0.0.1", port: int = DEFAULT_OUTBOUND_PORT) -> tuple[str, int]:
        """The transparent outbound listener (iptables REDIRECT target); returns its address."""
        return self._listen(host, port, serve_outbound, "sidecar")

    async def open_gateway(self, host: str = "0.0.0.0", port: int = 8443) -> tuple[str, int]:
        """The egress gateway's mesh-facing mTLS listener; returns its address."""
        return self._listen(host, port, serve_gateway, "gateway", gated=True)

    async def open_admin(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """GET /metrics and /ready on a small HTTP endpoint of its own."""
        from tether.proxy.metrics import serve_admin

        self._bind_loop()
        self._admin = await serve_admin(self.registry, host, port, lambda: bool(self.listeners))
        return self._admin.sockets[0].getsockname()[:2]

    def _listen(self, host: str, port: int, handler: Handler, role: str, *, gated: bool = False) -> tuple[str, int]:
        loop = self._bind_loop()
        lst = _Listener(self, open_listen_socket(host, port), handler, role)
        if gated:  # a public, TLS-terminating listener: cap the handshakes in flight
            lst.gate = HandshakeGate(loop, "%s egress listener %s:%s" % (role, *lst.address),
                                     self.max_pending_handshakes, pause=lst.gate_pause, resume=lst.gate_resume)
        self.listeners.append(lst)
        lst.start()
        log.info("%s egress listener on %s:%s", role, *lst.address)
        return lst.address

    # ------------------------------------------------------------------ connections
    def spawn(self, handler: Handler, role: str, sock: socket.socket, addr, gate: HandshakeGate | None = None) -> None:
        sess = Session(self, role, addr)
        if gate is not None:
            sess.gate, sess.sock = gate, sock
            gate.admit(sess)
        task = self.loop.create_task(self._setup(handler, sess, sock))
        self.setups.add(task)
        task.add_done_callback(self._setup_done)

    def _setup_done(self, task: asyncio.Task) -> None:
        self.setups.discard(task)
        self._check_idle()

    def _check_idle(self) -> None:
        if self._idle is not None and not self.setups and not self.splices:
            self._idle.set()

    async def _setup(self, handler: Handler, sess: Session, sock: socket.socket) -> None:
        up = None
        try:
            async with asyncio.timeout(self.setup_timeout):
                down, up, first = await handler(self, sess, sock)
                await up.send(first)
        except SetupError as e:
            return self._abandon(sess, sock, up, e.result, e.reason)
        except TimeoutError:
            return self._abandon(sess, sock, up, "setup-timeout", f"setup took longer than {self.setup_timeout:g}s")
        except asyncio.CancelledError:
            self._abandon(sess, sock, up, "drained", "proxy closed during setup")
            raise
        except OSError as e:
            return self._abandon(sess, sock, up, "client-closed", f"{e.__class__.__name__}: {e}")
        except Exception as e:  # a bug must cost one connection, never the listener
            log.exception("egress setup failed for %s", sess.source_address)
            return self._abandon(sess, sock, up, "error", f"{e.__class__.__name__}: {e}")
        splice = Splice(self.loop, self.bufs, down.end(), up.end(), None)

        def done(result: str, reason: str) -> None:
            self.splices.discard(splice)
            sess.finish(result, reason, splice.bytes_ab, splice.bytes_ba)
            self._check_idle()

        splice.on_done = done
        self.splices.add(splice)
        splice.start()

    @staticmethod
    def _abandon(sess: Session, sock: socket.socket, up, result: str, reason: str) -> None:
        sock.close()
        if up is not None:
            up.close()
        sess.finish(result, reason)

    # ------------------------------------------------------------------ shutdown
    def stop_accepting(self) -> None:
        for lst in self.listeners:
            lst.close()
        self.listeners.clear()

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let connections finish for up to `timeout` s, then close the rest."""
        self.stop_accepting()
        self._idle = asyncio.Event()
        self._check_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        cut = len(self.splices) + len(self.setups)
        await self.close()
        return cut

    async def close(self) -> None:
        self.stop_accepting()
        for task in list(self.setups):
            task.cancel()
        if self.setups:
            await asyncio.gather(*self.setups, return_exceptions=True)
        for splice in list(self.splices):
            splice.finish("drained", "proxy closed")
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._admin is not None:
            self._admin.close()
            await self._admin.wait_closed()
            self._admin = None
        self.access_log.close()


class _Listener(AcceptLoop):
    """An egress listening socket: one setup coroutine per accepted connection."""

    def __init__(self, px: EgressProxy, sock: socket.socket, handler: Handler, role: str) -> None:
        super().__init__(px.loop, sock)
        self.px, self.handler, self.role = px, handler, role
        self.label = f"{role} egress listener"

    def _on_accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._gated:
                return  # the gate is full: the rest waits in the kernel's backlog
            try:
                c, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in RESOURCE_ERRORS:
                    return self._pause(e)
                continue  # ECONNABORTED and friends: that client is gone
            c.setblocking(False)
            try:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            self.px.spawn(self.handler, self.role, c, addr, self.gate)
