"""A listener's gate on connections in their handshake: the I/O side of core/admission.py.

    gate = HandshakeGate(loop, "inbound db 0.0.0.0:21000", cap, pause=..., resume=...)
    gate.admit(conn)     # just accepted (before its first read)
    gate.heard(conn)     # its first bytes arrived
    gate.done(conn)      # its handshake finished, or it closed

At the cap the gate calls `pause()` (the listener stops reading its socket); a timer sheds
what the pressure timeouts allow (`conn.shed(reason)`, which must end the handshake and so
call `done`; `conn.sock_for_gate()` gives its socket, to see whether a silent one has in
fact spoken), and `resume()` runs as soon as there is room. A flood pauses and resumes a
listener many times a second, so the log says so at most every LOG_EVERY seconds, with
how many connections were shed meanwhile. Nothing here runs per byte: three dict
operations per connection, all during setup.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable

from tether.core.admission import PRESSURE_HANDSHAKE_TIMEOUT, PRESSURE_SILENT_TIMEOUT, PendingHandshakes

log = logging.getLogger("tether.proxy")

#: Seconds between two log lines about the same listener being under pressure.
LOG_EVERY = 10.0


def _spoke(conn) -> bool:
    """Whether a connection counted as silent has bytes waiting that the loop has not read:
    with uvloop, timers run before the I/O poll of the same turn."""
    try:
        return bool(conn.sock_for_gate().recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing yet (EAGAIN), or it is gone
        return False


class HandshakeGate:
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, cap: int, *, pause: Callable[[], None],
                 resume: Callable[[], None], silent_timeout: float = PRESSURE_SILENT_TIMEOUT,
                 handshake_timeout: float = PRESSURE_HANDSHAKE_TIMEOUT) -> None:
        self.loop = loop
        self.name = name
        self.pending = PendingHandshakes(cap, silent_timeout=silent_timeout, handshake_timeout=handshake_timeout)
        self._pause, self._resume = pause, resume
        self.paused = False
        self.closed = False
        self._shed_unlogged = 0
        self._logged_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def set_cap(self, cap: int) -> None:
        self.pending.cap = cap
        if self.pending.full and not self.paused:
            self._enter_pressure()
        self._check()

    def admit(self, conn) -> None:
        self.pending.add(conn, self.loop.time())
        if self.pending.full and not self.paused:
            self._enter_pressure()

    def heard(self, conn) -> None:
        self.pending.heard(conn)

    def done(self, conn) -> None:
        if self.pending.remove(conn) and self.paused:
            self._check()

    def _enter_pressure(self) -> None:
        self.paused = True
        now = self.loop.time()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            p = self.pending
            log.warning("%s: %d connections in their handshake (the cap): not accepting until there is room; "
                        "under pressure a connection may stay silent %gs and take %gs to finish (%d shed since "
                        "the last such line)", self.name, len(p), p.silent_timeout, p.handshake_timeout,
                        self._shed_unlogged)
            self._shed_unlogged = 0
        self._pause()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None or self.closed:
            return
        when = self.pending.next_shed_at()
        if when is not None:
            self._timer = self.loop.call_at(when, self._shed)

    def _shed(self) -> None:
        self._timer = None
        p = self.pending
        for conn, silent in p.shed(self.loop.time(), spoke=_spoke):
            self._shed_unlogged += 1
            conn.shed((f"silent for {p.silent_timeout:g}s" if silent else
                       f"no complete handshake within {p.handshake_timeout:g}s") + f" while {p.cap} handshakes were pending")
        self._check()

    def _check(self) -> None:
        if not self.paused:
            return
        if self.pending.full:
            self._arm()
            return
        self.paused = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed:
            self._resume()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
