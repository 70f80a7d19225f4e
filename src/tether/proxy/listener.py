"""Listening sockets: accept in batches on `loop.add_reader`, hand each socket to a Conn.

Running out of file descriptors (EMFILE/ENFILE) or kernel memory does not crash the
accept loop: it logs (at most once per back-off period), stops accepting for
`ACCEPT_BACKOFF` seconds and tries again, like trio's and anyio's serve loops.
"""

from __future__ import annotations

import _socket
import errno
import logging
import socket

from tether.proxy.conn import NODELAY

log = logging.getLogger("tether.proxy")

#: Connections accepted per readiness callback before yielding to other work.
ACCEPT_BATCH = 64
#: Pause after an out-of-resources accept error.
ACCEPT_BACKOFF = 0.1
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """One bound socket of the engine; `conn_cls(listener, sock, addr).begin()` per accept."""

    def __init__(self, engine, sock: socket.socket, conn_cls, name: str) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.conn_cls = conn_cls
        self.name = name
        self.family = sock.family
        self.address = sock.getsockname()[:2]
        self.port = self.address[1]
        self.closed = False
        self._backoff = None

    @property
    def direction(self) -> str:
        return self.conn_cls.direction

    def start(self) -> None:
        self.engine.loop.add_reader(self.fd, self._on_accept)

    def _on_accept(self) -> None:
        accept = self.sock._accept  # the C call under socket.accept(), minus its Python wrapper
        cls = self.conn_cls
        fam = self.family
        for _ in range(ACCEPT_BATCH):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _RESOURCE_ERRORS:
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
            try:
                conn.begin()
            except Exception as e:  # a bug must cost one connection, never the listener or an fd
                conn.internal_error(e)

    def _pause(self, exc: OSError) -> None:
        if self._backoff is not None or self.closed:
            return
        log.warning("%s listener %s:%s: %s; not accepting for %.1fs", self.direction, *self.address,
                    exc.strerror, ACCEPT_BACKOFF)
        loop = self.engine.loop
        loop.remove_reader(self.fd)
        self._backoff = loop.call_later(ACCEPT_BACKOFF, self._resume)

    def _resume(self) -> None:
        self._backoff = None
        if not self.closed:
            self.start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._backoff is not None:
            self._backoff.cancel()
        self.engine.loop.remove_reader(self.fd)
        self.sock.close()
