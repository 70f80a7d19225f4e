"""The egress hot path: move bytes both ways between two sockets, either of which may carry TLS.

Egress needs every pairing: plain <-> plain (passthrough), plain <-> TLS (mesh mutual
TLS from a sidecar, or TLS origination), TLS <-> plain (the gateway's SNI passthrough)
and TLS <-> TLS (the gateway originating TLS). The engine's relay (proxy/relay.py) is
built for exactly one plain and one TLS side, so this module is its two-sided sibling,
on the same principles: readiness callbacks on raw non-blocking sockets, TLS through
`ssl.MemoryBIO` pairs, one recv / (decrypt) / (encrypt) / send per wakeup into buffers
shared by the whole proxy, no per-chunk logging, metrics or timers. A short send keeps
the unsent tail, stops reading the source and flushes on writability (back-pressure).

Half-close is relayed: EOF (or close_notify) from one side becomes close_notify (on a TLS
side) plus a TCP write shutdown on the other; the splice ends when both directions have
ended, or at once on an error. `on_done(result, reason)` is called exactly once.
"""

from __future__ import annotations

import socket
import ssl
from typing import Callable

AGAIN = (BlockingIOError, InterruptedError)
WantRead = ssl.SSLWantReadError
ZeroReturn = ssl.SSLZeroReturnError
SSLError = ssl.SSLError

#: Plaintext read per wakeup (64 KiB keeps one encrypted copy under glibc's mmap threshold).
PLAIN_CHUNK = 65536
#: Ciphertext read per wakeup (up to 16 full TLS records in one syscall).
TLS_CHUNK = 262144
#: Decrypted records are gathered up to this much before one send.
DECRYPT_BUF = 262144
DECRYPT_FLUSH = DECRYPT_BUF - 16384 - 256


class Buffers:
    """Scratch buffers shared by every splice of one proxy (one event-loop thread)."""

    __slots__ = ("rbuf", "rmv", "dmv")

    def __init__(self) -> None:
        self.rbuf = bytearray(TLS_CHUNK)
        self.rmv = memoryview(self.rbuf)
        self.dmv = memoryview(bytearray(DECRYPT_BUF))


class End:
    """One side: a connected non-blocking socket, and its TLS session if it speaks TLS."""

    __slots__ = ("sock", "fd", "obj", "inc", "out")

    def __init__(self, sock: socket.socket, obj: ssl.SSLObject | None = None,
                 inc: ssl.MemoryBIO | None = None, out: ssl.MemoryBIO | None = None) -> None:
        self.sock, self.fd, self.obj, self.inc, self.out = sock, sock.fileno(), obj, inc, out

    def tls_pending(self) -> bool:
        return self.obj is not None and (self.inc.pending > 0 or self.obj.pending() > 0)


class _Flow:
    """One direction, src -> dst."""

    __slots__ = ("src", "dst", "pend", "eof", "done", "n")

    def __init__(self, src: End, dst: End) -> None:
        self.src, self.dst = src, dst
        self.pend: memoryview | bytes | None = None
        self.eof = self.done = False
        self.n = 0


class Splice:
    """Both directions between `a` (the side that connected to us) and `b` (the next hop)."""

    __slots__ = ("loop", "bufs", "ab", "ba", "on_done", "closed", "idle_mark", "idle_since")

    def __init__(self, loop, bufs: Buffers, a: End, b: End, on_done: Callable[[str, str], None]) -> None:
        self.loop, self.bufs, self.on_done = loop, bufs, on_done
        self.ab, self.ba = _Flow(a, b), _Flow(b, a)
        self.closed = False
        self.idle_mark, self.idle_since = -1, 0.0  # for the proxy's idle sweep (not per chunk)

    def quiet_for(self, now: float) -> float:
        """Seconds without a byte either way, as seen by successive sweeps."""
        mark = self.ab.n + self.ba.n
        if mark != self.idle_mark:
            self.idle_mark, self.idle_since = mark, now
        return now - self.idle_since

    @property
    def half_closed(self) -> bool:
        return self.ab.done or self.ba.done

    @property
    def bytes_ab(self) -> int:
        return self.ab.n

    @property
    def bytes_ba(self) -> int:
        return self.ba.n

    def start(self) -> None:
        for flow in (self.ab, self.ba):
            self.loop.add_reader(flow.src.fd, self._read, flow)
        for flow in (self.ab, self.ba):
            if flow.src.tls_pending() and not self.closed:  # records that came with the handshake
                self._pump_tls(flow)

    # ------------------------------------------------------------------ reading
    def _read(self, flow: _Flow) -> None:
        src, bufs = flow.src, self.bufs
        try:
            n = src.sock.recv_into(bufs.rbuf, PLAIN_CHUNK if src.obj is None else TLS_CHUNK)
        except AGAIN:
            return
        except OSError as e:
            return self._abort("recv", e)
        if not n:
            return self._eof(flow)  # TCP FIN; for TLS without close_notify too (ragged EOF)
        if src.obj is None:
            self._deliver(flow, bufs.rmv[:n])
        else:
            src.inc.write(bufs.rmv[:n])
            self._pump_tls(flow)

    def _pump_tls(self, flow: _Flow) -> None:
        """Decrypt every complete record waiting on `flow.src` and deliver it in batches."""
        obj, inc, dmv = flow.src.obj, flow.src.inc, self.bufs.dmv
        while True:
            off, eof, more = 0, False, False
            try:
                while True:
                    m = obj.read(DECRYPT_BUF - off, dmv[off:])
                    if not m:
                        eof = True
                        break
                    off += m
                    if not inc.pending and not obj.pending():
                        break
                    if off >= DECRYPT_FLUSH:
                        more = True
                        break
            except WantRead:
                pass  # the rest of a record is still on its way
            except ZeroReturn:
                eof = True
            except SSLError as e:
                return self._abort("tls read", e)
            if off and not self._deliver(flow, dmv[:off]):
                flow.eof = flow.eof or eof
                return  # blocked: _flush resumes the pump
            if eof:
                return self._eof(flow)
            if not more:
                return

    # ------------------------------------------------------------------ writing
    def _deliver(self, flow: _Flow, view: memoryview) -> bool:
        """Send `view` (a slice of a shared buffer) to flow.dst; False when it had to wait."""
        dst = flow.dst
        flow.n += len(view)
        if dst.obj is not None:
            try:
                dst.obj.write(view)
            except SSLError as e:
                self._abort("tls write", e)
                return False
            data, owned = dst.out.read(), True
        else:
            data, owned = view, False
        try:
            sent = dst.sock.send(data)
        except AGAIN:
            sent = 0
        except OSError as e:
            self._abort("send", e)
            return False
        if sent == len(data):
            return True
        # Keep the tail (copied out of the shared buffer unless it is ours) and stop reading.
        flow.pend = memoryview(data)[sent:] if owned else bytes(data[sent:])
        self.loop.remove_reader(flow.src.fd)
        self.loop.add_writer(dst.fd, self._flush, flow)
        return False

    def _flush(self, flow: _Flow) -> None:
        try:
            sent = flow.dst.sock.send(flow.pend)
        except AGAIN:
            return
        except OSError as e:
            return self._abort("send", e)
        if sent != len(flow.pend):
            flow.pend = flow.pend[sent:]
            return
        flow.pend = None
        self.loop.remove_writer(flow.dst.fd)
        if flow.src.tls_pending():
            self._pump_tls(flow)
            if flow.pend is not None or self.closed or flow.done:
                return
        if flow.eof:
            return self._end(flow)
        self.loop.add_reader(flow.src.fd, self._read, flow)

    # ------------------------------------------------------------------ ending
    def _eof(self, flow: _Flow) -> None:
        flow.eof = True
        self.loop.remove_reader(flow.src.fd)
        if flow.pend is None:
            self._end(flow)

    def _end(self, flow: _Flow) -> None:
        """flow.src has finished sending: pass the end on to flow.dst."""
        if flow.done:
            return
        dst = flow.dst
        try:
            if dst.obj is not None:
                try:
                    dst.obj.unwrap()
                except (WantRead, SSLError, ValueError):
                    pass  # our close_notify is in the BIO; the peer's comes later (or never)
                data = dst.out.read()
                if data:
                    dst.sock.send(data)
            dst.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        flow.done = True
        other = self.ba if flow is self.ab else self.ab
        if other.done:
            self.finish("allowed", "")

    def _abort(self, where: str, exc: BaseException) -> None:
        self.finish("allowed", f"{where}: {exc.__class__.__name__}: {exc}")

    def finish(self, result: str, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.loop
        for end in (self.ab.src, self.ba.src):
            loop.remove_reader(end.fd)
            loop.remove_writer(end.fd)
            end.sock.close()
        self.on_done(result, reason)
