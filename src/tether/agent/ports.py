"""Sidecar ports the agent chooses: free by the kernel's word, and held until the sidecar goes.

A port from the sidecar range is taken only if a bind on the sidecar's bind address
succeeds, without SO_REUSEADDR, so any socket bound there (a listener, a connection, another
agent's hold) makes the agent try the next port of the range. The agent keeps that socket
bound, never listening, for as long as the sidecar is registered, and sets SO_REUSEADDR on
it once bound: the sidecar's own listener (which sets SO_REUSEADDR too) can then bind the
same port, while a second agent's test still fails on it. Connections to a held port that
nothing listens on are refused, so a held port never looks alive.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Iterable

from tether.core.errors import InvalidInput
from tether.netutil import bind_error, family_of

log = logging.getLogger("tether.agent.ports")

#: A bind failing with these means "taken, try the next one"; anything else is the address's fault.
_TAKEN = frozenset({errno.EADDRINUSE, errno.EACCES})


def hold_port(host: str, port: int) -> socket.socket | None:
    """The bound socket if `host:port` is free, None if something holds it."""
    sock = socket.socket(family_of(host) or socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in _TAKEN:
            return None
        raise InvalidInput(f"sidecar bind address: {bind_error(host, port, exc, 'bind').strerror}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


class SidecarPorts:
    """The agent's held sidecar ports, by sidecar ID."""

    def __init__(self) -> None:
        self._held: dict[str, socket.socket] = {}

    def choose(self, host: str, candidates: Iterable[int]) -> socket.socket | None:
        """Hold the first candidate port that is free on `host`; None when none is."""
        for port in candidates:
            sock = hold_port(host, port)
            if sock is not None:
                return sock
            log.info("sidecar port %s:%d is in use; trying the next one", host, port)
        return None

    def keep(self, owner: str, sock: socket.socket) -> None:
        """`owner` (a sidecar ID) now holds `sock`; what it held before is released."""
        self.release(owner)
        self._held[owner] = sock

    def release(self, owner: str) -> None:
        sock = self._held.pop(owner, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for owner in list(self._held):
            self.release(owner)
