"""Connection setup shared by both listeners: TLS handshake, non-blocking dial, and the end.

`Conn` extends the hot-path `Relay` with the setup phase, driven by readiness callbacks
on the event loop (no task per connection): a TLS handshake over `ssl.MemoryBIO` with a
timeout and a named failure reason, a TCP connect with a timeout, and `finish()`, which
closes every socket exactly once, updates the counters and writes the access-log line.
`InboundConn` and `UpstreamConn` (inbound.py, upstream.py) chain these steps.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import ssl
import logging
import time
from time import monotonic

from tether.netutil import family_of
from tether.proxy.der import uri_sans_cached
from tether.proxy.relay import AGAIN, SSLError, WantRead, Relay
from tether.proxy.tls import classify_tls_error, match_first_bytes

log = logging.getLogger("tether.proxy")
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
#: A handshake flight is a few KiB; read at most this much per wakeup while handshaking.
HS_CHUNK = 16384
SOCK_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
#: Most bytes a peer may send (kept in memory) before the next hop is connected.
PARK_LIMIT = 262144


def _placeholder() -> None:
    """Read callback held for an instant between two phases (always replaced at once)."""


def wrap_bio(ctx: ssl.SSLContext, inc: ssl.MemoryBIO, out: ssl.MemoryBIO, server_side: bool,
             server_hostname: str | None):
    """A TLS session object over two memory BIOs.

    Returns the C session that `ssl.SSLObject` wraps (same read/write/pending/do_handshake/
    getpeercert methods, one Python frame less per call on the hot path); falls back to the
    public `ssl.SSLObject` if this Python's ssl module is built differently.
    """
    try:
        return ctx._wrap_bio(inc, out, server_side, server_hostname)
    except (AttributeError, TypeError):
        return ctx.wrap_bio(inc, out, server_side=server_side, server_hostname=server_hostname)


class Conn(Relay):
    """One proxied connection from accept to access-log line."""

    __slots__ = ("lst", "timer", "hs_rx", "hs_tx", "hs_server", "dsock", "dfd", "dial_t0", "start", "t0",
                 "peer_ip", "src_addr", "source", "up_addr", "flags", "phase", "idle_mark", "idle_since")

    direction = "?"

    def __init__(self, lst, client: socket.socket, addr) -> None:
        eng = lst.engine
        super().__init__(eng.loop, eng.bufs)
        self.lst = lst
        self.timer = None
        self.hs_rx = 0
        self.hs_tx = False
        self.hs_server = False
        self.dsock = None
        self.dfd = -1
        self.dial_t0 = 0.0
        self.start = time.time()
        self.t0 = monotonic()
        self.peer_ip = addr[0] if addr else ""
        self.src_addr = (f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}") if addr else ""
        self.source = None
        self.up_addr = None
        self.flags = None
        self.phase = "handshake"
        self.idle_mark = -1
        self.idle_since = 0.0
        eng.live.add(self)
        eng.stats.active[self.direction] += 1

    def add_flag(self, flag: str) -> None:
        if self.flags is None:
            self.flags = [flag]
        elif flag not in self.flags:
            self.flags.append(flag)

    # ------------------------------------------------------------------ TLS handshake
    def tls_begin(self, sock: socket.socket, ctx: ssl.SSLContext, server_side: bool, timeout: float,
                  server_hostname: str | None = None) -> None:
        self.t = sock
        self.tfd = sock.fileno()
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = wrap_bio(ctx, self.inc, self.out, server_side, server_hostname)
        self.hs_server = server_side
        self.hs_rx = 0
        self.timer = self.loop.call_later(timeout, self._hs_timeout)
        self.loop.add_reader(self.tfd, self._hs_readable)
        if server_side:
            self._hs_readable()  # the ClientHello has often arrived by accept time
        else:
            self._hs_step()  # writes the ClientHello

    def _hs_readable(self) -> None:
        try:
            n = self.t.recv_into(self.rbuf, HS_CHUNK)
        except AGAIN:
            return
        except OSError as e:
            return self._hs_failed("connection-reset", str(e))
        if not n:
            if self.hs_server and not self.hs_rx:
                return self._hs_failed("closed-before-hello", "peer closed before sending anything")
            if self.hs_server and not self.hs_tx:
                return self._hs_failed("truncated-hello", f"peer closed after {self.hs_rx} bytes of ClientHello")
            return self._hs_failed("peer-closed", "peer closed during the handshake")
        if self.hs_server and not self.hs_rx:
            gate = self.lst.gate
            if gate is not None:
                gate.heard(self)  # no longer silent: under pressure it gets the longer deadline
            kind = match_first_bytes(bytes(self.rmv[:4]))
            if kind is not None:
                return self.on_not_tls(kind, n)
        self.hs_rx += n
        self.inc.write(self.rmv[:n])
        self._hs_step()

    def _hs_step(self) -> None:
        done = False
        try:
            self.obj.do_handshake()
            done = True
        except WantRead:
            pass
        except (SSLError, ValueError) as e:
            alert = self.out.read()  # deliver our alert (best effort) so the peer learns why
            if alert and self.pend_t is None:
                try:
                    self.t.send(alert)
                except OSError:
                    pass
            return self._hs_failed(*classify_tls_error(e))
        if not self._hs_send() or self.closed:
            return
        if done:
            self.end_handshake_phase()
            # Stay registered (cheaper than re-registering): until the relay starts,
            # whatever the peer sends is parked in the BIO.
            self.loop.add_reader(self.tfd, self._park_t)
            self.on_handshake()

    def _park_t(self) -> None:
        """TLS bytes that arrive while the next hop is being dialed: keep them in the BIO."""
        try:
            n = self.t.recv_into(self.rbuf, HS_CHUNK)
        except AGAIN:
            return
        except OSError:
            n = 0  # the relay will meet the reset (or EOF) itself
        if n:
            self.inc.write(self.rmv[:n])
        if not n or self.inc.pending >= PARK_LIMIT:
            self.loop.remove_reader(self.tfd)  # relay_start registers it again

    def _hs_send(self) -> bool:
        data = self.out.read()
        if not data:
            return True
        self.hs_tx = True
        if self.pend_t is not None:  # still flushing an earlier flight: queue behind it
            self.pend_t = memoryview(bytes(self.pend_t) + data)
            return True
        try:
            sent = self.t.send(data)
        except AGAIN:
            sent = 0
        except OSError as e:
            self._hs_failed("connection-reset", str(e))
            return False
        if sent != len(data):
            self.pend_t = memoryview(data)[sent:]
            self.loop.add_writer(self.tfd, self._hs_flush)
        return True

    def _hs_flush(self) -> None:
        try:
            sent = self.t.send(self.pend_t)
        except AGAIN:
            return
        except OSError as e:
            return self._hs_failed("connection-reset", str(e))
        self.pend_t = self.pend_t[sent:] if sent != len(self.pend_t) else None
        if self.pend_t is None:
            self.loop.remove_writer(self.tfd)

    def _hs_timeout(self) -> None:
        self.timer = None
        self._hs_failed("handshake-timeout", f"no complete handshake within {self.lst.engine.handshake_timeout:g}s")

    def sock_for_gate(self):
        return self.t

    def shed(self, detail: str) -> None:
        """The listener's gate ends this handshake to make room (core/admission.py)."""
        self._hs_failed("shed-under-pressure", detail)

    def _hs_failed(self, reason: str, detail: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.lst.engine.stats.handshake_failures[(self.direction, reason)] += 1
        self.on_handshake_failed(reason, detail)

    def peer_uris(self) -> tuple[str, ...]:
        der = self.obj.getpeercert(True)
        if not der:
            return ()
        try:
            return uri_sans_cached(der)
        except ValueError:
            return ()

    # ------------------------------------------------------------------ TCP dial
    def dial_begin(self, host: str, port: int, timeout: float) -> None:
        fam = family_of(host)
        if fam is None:
            return self.on_dial_failed(f"{host}: not an IP address (resolve names before handing them to the engine)")
        try:
            s = _socket.socket(fam, SOCK_STREAM_NONBLOCK)
        except OSError as e:  # EMFILE / ENFILE: out of descriptors
            return self.on_dial_failed(f"socket: {e.strerror}")
        s.setsockopt(*NODELAY)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return self.on_dial_failed(os.strerror(err))
        self.dsock = s
        self.dfd = s.fileno()
        self.dial_t0 = monotonic()
        self.loop.add_writer(self.dfd, self._dial_ready)
        self.timer = self.loop.call_later(timeout, self._dial_timeout, timeout)

    def _dial_ready(self) -> None:
        s, fd = self.dsock, self.dfd
        self.dsock, self.dfd = None, -1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.loop.remove_writer(fd)
            s.close()
            return self.on_dial_failed(os.strerror(err))
        # The next phase reads this socket. Registering the read side before dropping the
        # write side keeps the loop's poll handle (no close, re-create and re-add); the
        # next phase replaces the placeholder callback at once.
        self.loop.add_reader(fd, _placeholder)
        self.loop.remove_writer(fd)
        self.on_dial_ok(s)

    def _dial_timeout(self, timeout: float) -> None:
        self.timer = None
        self._drop_dial()
        self.on_dial_failed(f"connect timeout after {timeout:g}s")

    def _drop_dial(self) -> None:
        if self.dsock is not None:
            self.loop.remove_writer(self.dfd)
            self.dsock.close()
            self.dsock = None
            self.dfd = -1

    # ------------------------------------------------------------------ hooks
    def on_handshake(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_handshake_failed(self, reason: str, detail: str) -> None:
        self.finish("handshake-failure", f"{reason}: {detail}")

    def on_not_tls(self, kind: str, n: int) -> None:
        """The peer's first `n` bytes (in `rmv`) are not a TLS record: refused, unless a
        subclass takes plaintext (the inbound listener does, when policy admits it)."""
        self._hs_failed(kind, "first bytes are not a TLS handshake record")

    def end_handshake_phase(self) -> None:
        """Stop the handshake timer and leave the listener's handshake gate."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        gate = self.lst.gate
        if gate is not None:
            gate.done(self)

    def on_dial_ok(self, sock: socket.socket) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_dial_failed(self, reason: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def destination(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def byte_counts(self) -> tuple[int, int]:
        """(bytes received from the client, bytes sent to the client)."""
        raise NotImplementedError  # pragma: no cover

    # ------------------------------------------------------------------ the end
    def finish(self, result: str, reason: str = "") -> None:
        if self.closed:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_dial()
        self.close_sockets()
        self.phase = "closed"
        lst = self.lst
        if lst.gate is not None:
            lst.gate.done(self)
        eng = lst.engine
        eng.live.discard(self)
        self.on_closed()
        d = self.direction
        st = eng.stats
        st.active[d] -= 1
        st.connections[(d, result)] += 1
        rx, tx = self.byte_counts()
        if rx:
            st.bytes[(d, "received")] += rx
        if tx:
            st.bytes[(d, "sent")] += tx
        eng.access_log.write({
            "start_time": eng.format_time(self.start), "duration_ms": round((monotonic() - self.t0) * 1000, 3),
            "direction": d, "source": self.source, "source_address": self.src_addr,
            "destination": self.destination(), "upstream_address": self.up_addr,
            "bytes_received": rx, "bytes_sent": tx, "result": result, "reason": reason,
            "flags": self.flags or [],
        })
        eng.conn_closed()

    def on_closed(self) -> None:
        """Subclass hook: release pool slots, leave registries."""

    def internal_error(self, exc: BaseException) -> None:
        """A bug surfaced in a callback: log it with the traceback, close this connection only."""
        log.error("%s connection from %s: internal error", self.direction, self.src_addr, exc_info=exc)
        self.finish("error", f"internal error: {exc.__class__.__name__}: {exc}")
