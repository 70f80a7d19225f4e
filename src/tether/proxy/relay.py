"""The hot path: move bytes between one plain TCP socket and one TLS-over-TCP socket.

Once a connection is set up (handshake done, peer authorized, next hop connected), every
chunk goes through exactly one of two methods, `_read_p` (plain -> TLS) or `_read_t`
(TLS -> plain): one recv into a preallocated buffer, one encrypt/decrypt through the
session's `ssl.MemoryBIO` pair, one send. No per-chunk logging, metrics, timers or
Python-level layers; byte counts are two integer adds, read by the access log at close.

Why raw sockets on `loop.add_reader` rather than asyncio Protocol pairs: measured on the
two-hop chain (docs/performance.md), a `Protocol` pair (uvloop's SSL transport, or our own
BIO TLS over uvloop TCP transports) cost 5-10 % more CPU per round trip and per new
connection than readiness callbacks with `recv_into` + `MemoryBIO`, and the TLS transport
cannot batch the decrypted records of one read into a single send. Back-pressure is the
same idea as pause_reading/resume_reading: when a send is short, the unsent tail is kept,
reading from the source stops (`remove_reader`) and a writer callback flushes the tail,
then reading resumes.

Half-close is relayed: EOF from the plain side becomes a TLS close_notify plus a TCP
write shutdown; close_notify/EOF from the TLS side becomes `shutdown(SHUT_WR)` on the plain
side. The connection ends when both directions have ended, or at once on an error.
"""

from __future__ import annotations

import socket
import ssl

AGAIN = (BlockingIOError, InterruptedError)
WantRead = ssl.SSLWantReadError
SSLError = ssl.SSLError
ZeroReturn = ssl.SSLZeroReturnError
SHUT_WR = socket.SHUT_WR

#: Plaintext read per wakeup from the plain side. 64 KiB keeps the encrypted copy (one
#: allocation from `MemoryBIO.read`) below glibc's mmap threshold.
PLAIN_CHUNK = 65536
#: Ciphertext read per wakeup from the TLS side (one syscall for up to 16 full records).
TLS_CHUNK = 262144
#: Size of the decrypt buffer; decrypted records are gathered into it and sent at once.
DECRYPT_BUF = 262144
#: Stop gathering and send once this much is decrypted (leaves room for one more record).
DECRYPT_FLUSH = DECRYPT_BUF - 16384 - 256


class ClearSession:
    """Stands in for the TLS session when the peer speaks plaintext (an inbound client that
    a Linkerd-style `unauthenticated` rule admits): bytes pass between the BIOs unchanged,
    so the relay's one code path (back-pressure, half-close, parking) serves both. Not
    the hot path: plaintext is the exception on a mesh port."""

    __slots__ = ("inc", "out")

    def __init__(self, inc: ssl.MemoryBIO, out: ssl.MemoryBIO) -> None:
        self.inc, self.out = inc, out

    def write(self, data) -> int:
        return self.out.write(data)

    def read(self, n: int, buf) -> int:
        data = self.inc.read(n)
        if not data:
            raise WantRead("no plaintext buffered")
        buf[:len(data)] = data
        return len(data)

    def shutdown(self) -> None:
        """There is no close_notify in plaintext; the TCP write shutdown follows."""


class Buffers:
    """Scratch buffers shared by every connection of one engine (one event loop thread)."""

    __slots__ = ("rbuf", "rmv", "dbuf", "dmv")

    def __init__(self) -> None:
        self.rbuf = bytearray(TLS_CHUNK)
        self.rmv = memoryview(self.rbuf)
        self.dbuf = bytearray(DECRYPT_BUF)
        self.dmv = memoryview(self.dbuf)


class Relay:
    """Splice state of one connection. Subclasses set the sockets up and implement `finish`."""

    __slots__ = ("loop", "rbuf", "rmv", "dmv", "p", "pfd", "t", "tfd", "obj", "inc", "out",
                 "pend_p", "pend_t", "n_p", "n_t", "eof_p", "eof_t", "done_a", "done_b", "closed", "truncated")

    def __init__(self, loop, bufs: Buffers) -> None:
        self.loop = loop
        self.rbuf = bufs.rbuf
        self.rmv = bufs.rmv
        self.dmv = bufs.dmv
        self.p = self.t = self.obj = self.inc = self.out = None
        self.pfd = self.tfd = -1
        self.pend_p = self.pend_t = None
        self.n_p = self.n_t = 0
        self.eof_p = self.eof_t = self.done_a = self.done_b = self.closed = False
        # The TLS peer stopped without a close_notify (a bare TCP EOF, a reset, a TLS error):
        # what a refusing sidecar does (UpstreamConn tells "upstream-refused" from "allowed").
        self.truncated = False

    # ------------------------------------------------------------------ start / end
    def relay_start(self) -> None:
        """Both sockets connected and the TLS session established: start moving bytes."""
        loop = self.loop
        loop.add_reader(self.pfd, self._read_p)
        if self.pend_t is not None:  # the last handshake flight is still being written: that first
            loop.remove_reader(self.pfd)
            loop.add_writer(self.tfd, self._flush_t)
        loop.add_reader(self.tfd, self._read_t)
        if self.inc.pending:  # records that arrived together with the handshake
            self._drain_tls()

    def finish(self, result: str, reason: str = "") -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close_sockets(self) -> None:
        """Unregister and close both sockets, exactly once (before any fd can be reused).

        Only registrations that may still exist are removed: a reader is gone once its
        side hit EOF or while the other side's backlog is flushed; a writer exists only
        while there is a backlog. (Each removal costs the loop a lookup and, maybe, a
        system call; at normal close none is left.)
        """
        if self.closed:
            return
        self.closed = True
        loop = self.loop
        if self.p is not None:
            if not self.eof_p and self.pend_t is None:
                loop.remove_reader(self.pfd)
            if self.pend_p is not None:
                loop.remove_writer(self.pfd)
            self.p.close()
        if self.t is not None:
            if not self.eof_t and self.pend_p is None:
                loop.remove_reader(self.tfd)
            if self.pend_t is not None:
                loop.remove_writer(self.tfd)
            self.t.close()

    def _abort(self, where: str, exc: BaseException) -> None:
        self.truncated = where.startswith("tls")
        self.finish("allowed", f"{where}: {exc.__class__.__name__}: {exc}")

    # ------------------------------------------------------------------ plain -> TLS
    def _read_p(self) -> None:
        try:
            n = self.p.recv_into(self.rbuf, PLAIN_CHUNK)
        except AGAIN:
            return
        except OSError as e:
            return self._abort("plain recv", e)
        if not n:
            return self._eof_from_p()
        self.n_p += n
        try:
            self.obj.write(self.rmv[:n])
        except SSLError as e:
            return self._abort("tls write", e)
        data = self.out.read()
        try:
            sent = self.t.send(data)
        except AGAIN:
            sent = 0
        except OSError as e:
            return self._abort("tls send", e)
        if sent != len(data):
            self.pend_t = memoryview(data)[sent:]  # `data` is ours: no copy needed
            self.loop.remove_reader(self.pfd)
            self.loop.add_writer(self.tfd, self._flush_t)

    def _flush_t(self) -> None:
        try:
            sent = self.t.send(self.pend_t)
        except AGAIN:
            return
        except OSError as e:
            return self._abort("tls send", e)
        if sent != len(self.pend_t):
            self.pend_t = self.pend_t[sent:]
            return
        self.pend_t = None
        self.loop.remove_writer(self.tfd)
        if self.eof_p:
            self._end_a()
        else:
            self.loop.add_reader(self.pfd, self._read_p)

    def _eof_from_p(self) -> None:
        self.eof_p = True
        self.loop.remove_reader(self.pfd)
        if self.pend_t is None:
            self._end_a()

    def _end_a(self) -> None:
        """Plain side finished sending: send close_notify, then a TCP write shutdown."""
        obj = self.obj
        try:
            # obj is the C session (its method is shutdown) or, as a fallback, ssl.SSLObject (unwrap)
            obj.unwrap() if hasattr(obj, "unwrap") else obj.shutdown()
        except (WantRead, SSLError, ValueError):
            pass  # close_notify is in the BIO; the peer's own comes later (or never)
        data = self.out.read()
        try:
            if data:
                self.t.send(data)
            self.t.shutdown(SHUT_WR)
        except OSError:
            pass
        self.done_a = True
        if self.done_b:
            self.finish("allowed", "")

    # ------------------------------------------------------------------ TLS -> plain
    def _read_t(self) -> None:
        try:
            n = self.t.recv_into(self.rbuf, TLS_CHUNK)
        except AGAIN:
            return
        except OSError as e:
            return self._abort("tls recv", e)
        if not n:  # TCP EOF: a clean TLS end arrives as ZeroReturn, before this
            self.truncated = True
            return self._eof_from_t()
        inc = self.inc
        inc.write(self.rmv[:n])
        # Fast path, one small record (request/response traffic): decrypt, send, done.
        # Records are at most 16 KiB and the buffer is larger, so a record is always
        # consumed whole and SSL_pending stays 0; only the BIO can hold more.
        try:
            m = self.obj.read(DECRYPT_BUF, self.dmv)
        except WantRead:
            return  # the rest of the record is still on its way
        except ZeroReturn:
            return self._eof_from_t()
        except SSLError as e:
            return self._abort("tls read", e)
        if not m:
            return self._eof_from_t()
        if inc.pending:
            return self._drain_tls(m)
        self.n_t += m
        try:
            sent = self.p.send(self.dmv[:m])
        except AGAIN:
            sent = 0
        except OSError as e:
            return self._abort("plain send", e)
        if sent != m:
            self._backlog_p(sent, m, False)

    def _drain_tls(self, off: int = 0) -> None:
        """Decrypt every complete record in the BIO, sending at most DECRYPT_BUF at a time.

        `off`: bytes already decrypted into the buffer by the caller.
        """
        obj, inc, dmv = self.obj, self.inc, self.dmv
        while True:
            eof = more = False
            try:
                while inc.pending:
                    m = obj.read(DECRYPT_BUF - off, dmv[off:])
                    if not m:
                        eof = True
                        break
                    off += m
                    if off >= DECRYPT_FLUSH:
                        more = True
                        break
            except WantRead:
                pass  # the rest of a record is still on its way
            except ZeroReturn:
                eof = True
            except SSLError as e:
                return self._abort("tls read", e)
            if off:
                self.n_t += off
                try:
                    sent = self.p.send(dmv[:off])
                except AGAIN:
                    sent = 0
                except OSError as e:
                    return self._abort("plain send", e)
                if sent != off:
                    return self._backlog_p(sent, off, eof)
            if eof:
                return self._eof_from_t()
            if not more:
                return
            off = 0

    def _backlog_p(self, sent: int, end: int, eof: bool) -> None:
        self.pend_p = bytes(self.dmv[sent:end])  # the buffer is shared: copy the tail
        self.eof_t = eof
        self.loop.remove_reader(self.tfd)
        self.loop.add_writer(self.pfd, self._flush_p)

    def _flush_p(self) -> None:
        try:
            sent = self.p.send(self.pend_p)
        except AGAIN:
            return
        except OSError as e:
            return self._abort("plain send", e)
        if sent != len(self.pend_p):
            self.pend_p = self.pend_p[sent:]
            return
        self.pend_p = None
        self.loop.remove_writer(self.pfd)
        if self.eof_t:
            self._end_b()
        else:
            self.loop.add_reader(self.tfd, self._read_t)
            if self.inc.pending:
                self._drain_tls()

    def _eof_from_t(self) -> None:
        self.eof_t = True
        self.loop.remove_reader(self.tfd)
        if self.pend_p is None:
            self._end_b()

    def _end_b(self) -> None:
        """TLS side finished sending: pass the EOF on to the plain side."""
        try:
            self.p.shutdown(SHUT_WR)
        except OSError:
            pass
        self.done_b = True
        if self.done_a:
            self.finish("allowed", "")
