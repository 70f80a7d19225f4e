"""Listening sockets: accept in batches on `loop.add_reader`, hand each socket to a Conn.

Running out of file descriptors (EMFILE/ENFILE) or kernel memory does not crash the
accept loop: it logs (at most once per back-off period), stops accepting for
`ACCEPT_BACKOFF` seconds and tries again, like trio's and anyio's serve loops.

A public (TLS-terminating) listener has a `gate` (proxy/admission.py): at most a cap of
accepted connections may be in their handshake; at the cap the listener stops accepting
until the gate has room (core/admission.py has the rules and the numbers).
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import socket

from tether.proxy.conn import NODELAY

log = logging.getLogger("tether.proxy")

#: Connections accepted per readiness callback before yielding to other work.
ACCEPT_BATCH = 64
#: Pause after an out-of-resources accept error.
ACCEPT_BACKOFF = 0.1
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptLoop:
    """A listening socket read on the loop's readiness (`_on_accept`, in subclasses). It stops
    reading for ACCEPT_BACKOFF after a resource error, and while its gate is full."""

    label = "listener"

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.address = sock.getsockname()[:2]
        self.port = self.address[1]
        self.closed = False
        self.gate = None  # HandshakeGate on a public listener; None: no cap
        self._backoff = None
        self._gated = False
        self._reading = False

    def start(self) -> None:
        self._sync_reader()

    def _on_accept(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sync_reader(self) -> None:
        """Read the listening socket unless closed, backing off, or held by the gate."""
        want = not self.closed and self._backoff is None and not self._gated
        if want and not self._reading:
            self.loop.add_reader(self.fd, self._on_accept)
        elif self._reading and not want:
            self.loop.remove_reader(self.fd)
        self._reading = want

    def gate_pause(self) -> None:
        self._gated = True
        self._sync_reader()

    def gate_resume(self) -> None:
        self._gated = False
        self._sync_reader()

    def _pause(self, exc: OSError) -> None:
        if self._backoff is not None or self.closed:
            return
        log.warning("%s %s:%s: %s; not accepting for %.1fs", self.label, *self.address, exc.strerror, ACCEPT_BACKOFF)
        self._backoff = self.loop.call_later(ACCEPT_BACKOFF, self._resume)
        self._sync_reader()

    def _resume(self) -> None:
        self._backoff = None
        self._sync_reader()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._backoff is not None:
            self._backoff.cancel()
        if self.gate is not None:
            self.gate.close()
        self._sync_reader()
        self.sock.close()


class Listener(AcceptLoop):
    """One bound socket of the engine; `conn_cls(listener, sock, addr).begin()` per accept."""

    def __init__(self, engine, sock: socket.socket, conn_cls, name: str) -> None:
        super().__init__(engine.loop, sock)
        self.engine = engine
        self.conn_cls = conn_cls
        self.name = name

    @property
    def direction(self) -> str:
        return self.conn_cls.direction

    @property
    def label(self) -> str:
        return f"{self.direction} listener"

    def _on_accept(self) -> None:
        accept = self.sock._accept  # the C call under socket.accept(), minus its Python wrapper
        cls = self.conn_cls
        fam = self.family
        gate = self.gate
        for _ in range(ACCEPT_BATCH):
            if self._gated:
                return  # the gate is full: the rest waits in the kernel's backlog
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in RESOURCE_ERRORS:
                    return self._pause(e)
                continue  # ECONNABORTED and friends: that client is gone, keep going
            # Connections use the C socket type directly: no Python-level wrapper per socket.
            c = _socket.socket(fam, socket.SOCK_STREAM, 0, fd)
            c.setblocking(False)
            try:
                c.setsockopt(*NODELAY)
            except OSError:
                pass  # the peer may already have reset it; the conn will find out
            conn = cls(self, c, addr)
            if gate is not None:
                gate.admit(conn)
            try:
                conn.begin()
            except Exception as e:  # a bug must cost one connection, never the listener or an fd
                conn.internal_error(e)
