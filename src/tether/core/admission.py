"""Connections that have not finished their handshake: how many a listener holds, and which
it sheds under pressure (pure bookkeeping: callers pass `now`, a monotonic time in seconds).

A public listener (a sidecar's inbound mutual-TLS listener, the egress gateway) that
accepts everything is at the mercy of an idle flood: connections that connect and send
nothing each hold a descriptor and a TLS session for the whole handshake timeout (10 s).
Measured before this existed: ~19,700 idle connections in 8 s held 17,601 descriptors and
took a sidecar from 32 to 229 MB. So each listener admits at most `cap` connections in
their handshake, and these are the rules (`PendingHandshakes`):

  1. Below the cap nothing changes: a handshake has the listener's own timeout.
  2. At the cap the listener is *under pressure*: it stops accepting (the kernel's backlog
     holds what comes, and clients retry their SYNs), and handshakes get less time:
     a connection that has sent nothing at all for `silent_timeout` is shed, since a TLS
     client sends its ClientHello as soon as it is connected (the caller's `spoke` check
     looks at the socket first, so bytes the event loop has not read yet still count);
     any other handshake older than `handshake_timeout` is shed. Roughly oldest first.
  3. Shedding makes room; below the cap again, the listener accepts again.

So a flood costs at most `cap` descriptors and sessions, and turns over about
`cap / silent_timeout` of its connections a second, which drains the kernel's backlog
quickly, so a real client (it speaks at once and finishes in a few round trips) waits at
most a SYN retransmission or two and is never shed.
"""

from __future__ import annotations

from typing import Callable, Hashable

#: Connections one listener may hold in their handshake. Well above what real clients
#: need at once (a handshake takes a few ms: a thousand at once is a thousand new connections
#: within ms), small enough that a flood's cost is bounded: ~1,024 descriptors, and ~10 KB
#: of TLS state each (~10 MB, inside the sidecar's memory budget).
DEFAULT_MAX_PENDING_HANDSHAKES = 1024
#: Under pressure: how long an accepted connection may stay silent (no ClientHello byte).
#: A TLS client sends its ClientHello in the flight that completes the TCP handshake, so it
#: has usually spoken by the time it is accepted; 250 ms also covers a retransmission at
#: Linux's minimum RTO (200 ms). It sets the flood's turnover: at the default cap ~4,000
#: idle connections a second, which empties a full 4,096 backlog in about a second
#: (measured: with 1 s, clients waited up to 4 s in SYN retransmissions during a flood).
PRESSURE_SILENT_TIMEOUT = 0.25
#: Under pressure: how long a handshake that has started may take in all. A full gate of
#: real handshakes is ~1,024 x 1.5 ms of CPU (docs/performance.md: ~2 ms per proxied
#: connection, both hops), so 5 s lets a burst of real clients finish while a slow-loris
#: client that sends a byte and stalls holds its slot for half the normal 10 s.
PRESSURE_HANDSHAKE_TIMEOUT = 5.0


class PendingHandshakes:
    """The accepted connections of one listener whose handshake is not finished, in accept order."""

    __slots__ = ("cap", "silent_timeout", "handshake_timeout", "_silent", "_talking")

    def __init__(self, cap: int = DEFAULT_MAX_PENDING_HANDSHAKES, *, silent_timeout: float = PRESSURE_SILENT_TIMEOUT,
                 handshake_timeout: float = PRESSURE_HANDSHAKE_TIMEOUT) -> None:
        if cap < 1:
            raise ValueError(f"the cap on pending handshakes must be at least 1, got {cap}")
        self.cap = cap
        self.silent_timeout = silent_timeout
        self.handshake_timeout = handshake_timeout
        # Two dicts in insertion (= accept) order: the oldest of each kind is its first key.
        self._silent: dict[Hashable, float] = {}
        self._talking: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._silent) + len(self._talking)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._silent or key in self._talking

    @property
    def full(self) -> bool:
        """Under pressure: accept nothing more until there is room."""
        return len(self._silent) + len(self._talking) >= self.cap

    def add(self, key: Hashable, now: float) -> None:
        """A connection was accepted at `now`; it has sent nothing yet."""
        self._silent[key] = now

    def heard(self, key: Hashable) -> None:
        """Its first bytes arrived (the start of a ClientHello)."""
        started = self._silent.pop(key, None)
        if started is not None:
            self._talking[key] = started

    def remove(self, key: Hashable) -> bool:
        """Its handshake finished or it closed; True if it was pending."""
        return self._silent.pop(key, None) is not None or self._talking.pop(key, None) is not None

    def shed(self, now: float, spoke: Callable[[Hashable], bool] = lambda key: False) -> list[tuple[Hashable, bool]]:
        """Under pressure, the connections past their pressure timeout (removed here), each
        with True if it never sent a byte; below the cap, none. `spoke(key)` is asked before
        a silent one is shed: True moves it to the talking ones instead (its bytes are there,
        not yet read)."""
        if not self.full:
            return []
        out = []
        while self._silent:
            key, started = next(iter(self._silent.items()))
            if now - started < self.silent_timeout:
                break
            if spoke(key):
                self.heard(key)
            else:
                del self._silent[key]
                out.append((key, True))
        while self._talking:
            key, started = next(iter(self._talking.items()))
            if now - started < self.handshake_timeout:
                break
            del self._talking[key]
            out.append((key, False))
        return out

    def next_shed_at(self) -> float | None:
        """When `shed` will next have something to look at (None below the cap, or when empty)."""
        if not self.full:
            return None
        times = [started + limit for pending, limit in ((self._silent, self.silent_timeout),
                                                        (self._talking, self.handshake_timeout))
                 for started in [next(iter(pending.values()), None)] if started is not None]
        return min(times) if times else None
