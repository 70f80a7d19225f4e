"""The proxy engine: the one object a process (standalone, agent-managed sidecar) drives.

    engine = Engine(material, authorize=fn, access_log=sys.stdout)
    await engine.open_inbound(InboundSpec(service="db", local_app_port=5432, bind_port=21000))
    await engine.open_upstream(UpstreamSpec("web", 9191, web_id), [Instance("10.0.0.5", 21000)])
    await engine.open_admin("127.0.0.1", 19000)
    engine.update_tls(new_material)          # new handshakes use it
    engine.update_upstream("web", instances) # pool membership, counters kept
    engine.update_authorizer(fn)             # re-checks live inbound connections now
    engine.close_upstream("web")             # stop accepting; open connections keep running
    engine.config_source_failed("agent", "connection refused")  # fail static, logged once
    await engine.drain(15.0); await engine.close()

Everything runs on the event loop that calls the first `open_*`. `authorize` is
`fn(source_spiffe_uri: str | None, peer_ip: str, port: int) -> decision`, where the
decision has `.allowed: bool`, `.reason: str` and optionally `.audit: bool` (allowed,
but would have been denied: flagged in the access log). It must be fast and synchronous:
it runs on the accept path of every inbound connection. An exception counts as deny.
An authorizer that also has `.plaintext(peer_ip, port) -> decision` decides inbound
clients that sent no TLS at all; without it they are refused (mutual TLS only).

Fail static: no update ever removes what the engine has unless the caller passes a
replacement; a failed update (bad TLS material, bad spec) raises and leaves the current
state serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable, TextIO

from tether.core.errors import Conflict, NotFound
from tether.proxy.accesslog import AccessLog, format_time
from tether.proxy.admission import HandshakeGate
from tether.proxy.inbound import InboundConn, InboundSpec
from tether.netutil import open_listen_socket
from tether.proxy.listener import Listener
from tether.proxy.metrics import ProxyStats, make_registry, serve_admin
from tether.proxy.pool import Instance, Pool
from tether.proxy.relay import Buffers
from tether.proxy.tls import TlsMaterial, build_contexts
from tether.proxy.upstream import UpstreamConn, UpstreamSpec

log = logging.getLogger("tether.proxy")

#: Seconds allowed for a TLS handshake (Consul's handshake_timeout_ms default is 10000).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: A connection whose one direction has ended is closed after this long without traffic.
DEFAULT_HALF_CLOSE_TIMEOUT = 60.0
#: How often idle / half-closed connections are looked for (at most).
SWEEP_INTERVAL = 1.0


class Denied:
    """The decision used when no authorizer was given: deny everything."""

    allowed = False
    audit = False
    reason = "no authorizer configured (default deny)"


def deny_all(source: str | None, peer_ip: str, port: int) -> Denied:
    return Denied()


Authorizer = Callable[[str | None, str, int], object]


class Engine:
    def __init__(self, material: TlsMaterial, *, authorize: Authorizer | None = None,
                 access_log: TextIO | None = None, log_format: str = "json",
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, idle_timeout: float | None = None,
                 half_close_timeout: float = DEFAULT_HALF_CLOSE_TIMEOUT) -> None:
        self.contexts = build_contexts(material)
        self.material = material
        self.authorizer: Authorizer = authorize or deny_all
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.half_close_timeout = half_close_timeout
        self.stats = ProxyStats()
        self.registry = make_registry(self.stats)
        self.access_log = AccessLog(access_log, log_format)
        self.format_time = format_time
        self.bufs = Buffers()
        self.live: set = set()
        self.listeners: list[Listener] = []
        self.upstreams: dict[str, Listener] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining = False
        self.stale_source: str | None = None
        self._admin: asyncio.AbstractServer | None = None
        self._drained: asyncio.Future | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ listeners
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
            self.access_log.loop = loop
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
        elif self.loop is not loop:
            raise Conflict("this engine already runs on another event loop")
        return loop

    async def open_inbound(self, spec: InboundSpec) -> Listener:
        """Start the public mTLS listener; returns it (`.address` has the bound port)."""
        spec.validate()
        loop = self._bind_loop()
        lst = Listener(self, open_listen_socket(spec.bind_host, spec.bind_port), InboundConn, spec.service)
        lst.spec = spec
        lst.gate = HandshakeGate(loop, "inbound %s %s:%s" % (spec.service, *lst.address), spec.max_pending_handshakes,
                                 pause=lst.gate_pause, resume=lst.gate_resume)
        self.listeners.append(lst)
        lst.start()
        log.info("inbound %s listening on %s:%s -> %s:%s", spec.service, *lst.address,
                 spec.local_app_host, spec.local_app_port)
        return lst

    async def open_upstream(self, spec: UpstreamSpec, instances: Iterable[Instance] = ()) -> Listener:
        """Start a plain listener for `spec.name`; connections go to `instances` over mTLS."""
        spec.validate()
        if spec.name in self.upstreams:
            raise Conflict(f"upstream {spec.name!r} is already open; use update_upstream to change its instances")
        self._bind_loop()
        lst = Listener(self, open_listen_socket(spec.bind_host, spec.bind_port), UpstreamConn, spec.name)
        lst.spec = spec
        lst.pool = Pool(instances, spec.policy, eject_after=spec.eject_after, eject_base=spec.eject_base,
                        eject_max=spec.eject_max)
        self.listeners.append(lst)
        self.upstreams[spec.name] = lst
        lst.start()
        log.info("upstream %s listening on %s:%s (%d instances, %s)", spec.name, *lst.address,
                 len(lst.pool), spec.policy)
        return lst

    async def open_admin(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve /metrics and /ready; returns the bound (host, port)."""
        self._bind_loop()
        self._admin = await serve_admin(self.registry, host, port, lambda: not self.draining)
        return self._admin.sockets[0].getsockname()[:2]

    def close_listener(self, lst: Listener) -> None:
        """Stop accepting on `lst` (inbound or upstream); its open connections keep running."""
        lst.close()
        if lst in self.listeners:
            self.listeners.remove(lst)
        for name, up in list(self.upstreams.items()):
            if up is lst:
                del self.upstreams[name]

    def close_upstream(self, name: str) -> None:
        """Stop the upstream listener `name`; raises NotFound if it is not open."""
        lst = self.upstreams.get(name)
        if lst is None:
            raise NotFound(f"upstream {name!r} is not open; known: {', '.join(sorted(self.upstreams)) or 'none'}")
        self.close_listener(lst)

    # ------------------------------------------------------------------ live updates
    def update_tls(self, material: TlsMaterial) -> None:
        """Use `material` for every handshake from now on. Live connections keep theirs.

        Raises InvalidInput (and keeps the current material) when it cannot be loaded.
        """
        self.contexts = build_contexts(material)
        self.material = material
        log.info("TLS material updated: %s, %d roots", material.spiffe_id, len(material.roots_pem))

    def update_upstream(self, name: str, instances: Iterable[Instance]) -> None:
        lst = self.upstreams.get(name)
        if lst is None:
            raise NotFound(f"upstream {name!r} is not open; known: {', '.join(sorted(self.upstreams)) or 'none'}")
        lst.pool.update(instances)
        log.info("upstream %s: %d instances", name, len(lst.pool))

    def update_authorizer(self, authorize: Authorizer) -> int:
        """Swap the authorizer and re-check every live inbound connection with it.

        Connections it now denies are closed at once (access-log result
        `authz-terminated`, metric tether_proxy_authz_terminate_total). Returns how many.
        """
        self.authorizer = authorize
        closed = 0
        for conn in list(self.live):
            if conn.direction != "inbound" or conn.phase not in ("dial", "relay"):
                continue
            allowed, reason, _ = self.check(authorize, conn.source, conn.peer_ip, conn.lst.port,
                                            plaintext=conn.plaintext)
            if allowed:
                continue
            dst = conn.destination()
            self.stats.authz_terminations[dst] += 1
            log.warning("closing connection from %s (%s) to %s: no longer authorized: %s",
                        conn.source or "unknown identity", conn.src_addr, dst, reason)
            conn.finish("authz-terminated", reason)
            closed += 1
        return closed

    def check(self, authorize: Authorizer, source: str | None, peer_ip: str, port: int, *,
              plaintext: bool = False) -> tuple[bool, str, bool]:
        """(allowed, reason, audit) from `authorize`; any failure of the authorizer denies."""
        try:
            if plaintext:
                decide_plaintext = getattr(authorize, "plaintext", None)
                if decide_plaintext is None:
                    return False, "plaintext client: this proxy's authorizer accepts mutual TLS only", False
                d = decide_plaintext(peer_ip, port)
            else:
                d = authorize(source, peer_ip, port)
            return bool(d.allowed), str(d.reason), bool(getattr(d, "audit", False))
        except Exception as e:  # a broken authorizer must fail closed, not crash the accept path
            log.error("authorizer failed for %s: %r (denying)", source, e)
            return False, f"authorizer error: {e.__class__.__name__}", False

    def config_source_failed(self, source: str, error: str) -> None:
        """Fail static: note that `source` is unreachable; keep serving the last known config."""
        if self.stale_source is None:
            log.warning("%s unreachable (%s); serving last known config: identity %s, %d upstream(s)",
                        source, error, self.material.spiffe_id, len(self.upstreams))
        self.stale_source = source
        self.stats.config_stale = 1

    def config_source_ok(self, source: str) -> None:
        if self.stale_source is not None:
            log.info("%s reachable again; config is current", source)
        self.stale_source = None
        self.stats.config_stale = 0

    # ------------------------------------------------------------------ housekeeping
    def _sweep_interval(self) -> float:
        shortest = min(t for t in (self.idle_timeout, self.half_close_timeout) if t)
        return max(0.01, min(SWEEP_INTERVAL, shortest / 4))

    def _sweep(self) -> None:
        """Close connections idle past idle_timeout, or half-closed and idle past half_close_timeout."""
        now = self.loop.time()
        idle, half = self.idle_timeout, self.half_close_timeout
        for conn in list(self.live):
            if conn.phase != "relay":
                continue
            mark = conn.n_p + conn.n_t
            if mark != conn.idle_mark:
                conn.idle_mark, conn.idle_since = mark, now
                continue
            quiet = now - conn.idle_since
            if idle and quiet >= idle:
                conn.add_flag("idle-timeout")
                conn.finish("idle-timeout", f"no bytes either way for {idle:g}s")
            elif (conn.eof_p or conn.eof_t) and quiet >= half:
                conn.add_flag("half-closed")
                conn.finish("allowed", f"half-closed and quiet for {half:g}s")
        self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    def conn_closed(self) -> None:
        if self._drained is not None and not self.live and not self._drained.done():
            self._drained.set_result(None)

    def stop_accepting(self) -> None:
        for lst in self.listeners:
            lst.close()

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let live connections finish for up to `timeout` s, close the rest.

        Returns how many connections were closed at the deadline.
        """
        self.draining = True
        self.stop_accepting()
        cut = 0
        if self.live:
            log.info("draining %d connection(s), deadline %gs", len(self.live), timeout)
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except asyncio.TimeoutError:
                for conn in list(self.live):
                    conn.finish("drained", f"still open at the drain deadline ({timeout:g}s)")
                    cut += 1
        self.access_log.flush()
        return cut

    async def close(self) -> None:
        """Close listeners, every live connection and the admin server, now."""
        self.stop_accepting()
        for conn in list(self.live):
            conn.finish("drained", "engine closed")
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._admin is not None:
            self._admin.close()
            await self._admin.wait_closed()
            self._admin = None
        self.access_log.close()
