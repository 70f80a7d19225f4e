"""Upstream listeners: plain TCP on 127.0.0.1:<port>, mutual TLS to an instance of one service.

Per connection: pick an instance from the pool -> TCP connect (timeout) -> TLS handshake
presenting our leaf -> the server must present exactly one URI SAN, equal to the expected
SPIFFE ID, else abort with `upstream-identity-mismatch` (no retry: a wrong identity is a
routing or security problem, not a transient one) -> relay. A failed connect or handshake
counts towards the instance's ejection and is retried on another instance, up to
`max_attempts` instances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import monotonic

from tether.core.errors import InvalidInput
from tether.proxy.conn import Conn
from tether.proxy.inbound import DEFAULT_CONNECT_TIMEOUT
from tether.proxy.pool import DEFAULT_EJECT_AFTER, DEFAULT_EJECT_BASE, DEFAULT_EJECT_MAX, POLICIES, ROUND_ROBIN

log = logging.getLogger("tether.proxy")

#: Instances tried per connection before giving up (Consul's built-in proxy tries once;
#: Envoy's default connect retry budget is also small).
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """A local listener for one destination service."""

    name: str  # destination service name
    bind_port: int
    spiffe_id: str  # the identity every instance must present (exact match)
    bind_host: str = "127.0.0.1"  # upstream listeners are for the local app only
    policy: str = ROUND_ROBIN
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    sni: str | None = None
    eject_after: int = DEFAULT_EJECT_AFTER
    eject_base: float = DEFAULT_EJECT_BASE
    eject_max: float = DEFAULT_EJECT_MAX

    def validate(self) -> None:
        problems = []
        if not self.name:
            problems.append("name: must not be empty")
        if not 0 <= self.bind_port < 65536:
            problems.append(f"bind_port: {self.bind_port} is not a TCP port")
        if not self.spiffe_id.startswith("spiffe://"):
            problems.append(f"spiffe_id: {self.spiffe_id!r} is not a spiffe:// URI")
        if self.policy not in POLICIES:
            problems.append(f"policy: {self.policy!r}, use one of {', '.join(POLICIES)}")
        if not self.connect_timeout > 0:
            problems.append(f"connect_timeout: {self.connect_timeout} must be > 0 seconds")
        if self.max_attempts < 1:
            problems.append(f"max_attempts: {self.max_attempts} must be >= 1")
        if problems:
            raise InvalidInput(f"upstream {self.name!r}: " + "; ".join(problems))


class UpstreamConn(Conn):
    __slots__ = ("member", "tried", "errors", "linked")

    direction = "outbound"

    def __init__(self, lst, client, addr) -> None:
        super().__init__(lst, client, addr)
        self.p = client
        self.pfd = client.fileno()
        self.member = None
        self.tried = []
        self.errors = []
        self.linked = False
        self.source = lst.engine.contexts.spiffe_id

    def begin(self) -> None:
        self._attempt()

    def destination(self) -> str:
        return self.lst.spec.name

    def byte_counts(self) -> tuple[int, int]:
        return self.n_p, self.n_t

    def finish(self, result: str, reason: str = "") -> None:
        # Through the mesh, the destination's sidecar ends every connection it served with a
        # close_notify; one it refuses (denied, its app unreachable) is closed right after the
        # handshake with neither a byte nor a close_notify. Say so, rather than "allowed".
        if result == "allowed" and self.truncated and not self.n_t:
            result = "upstream-refused"
            reason = (f"{self.up_addr} closed the connection after the handshake with no data and no TLS "
                      f"close_notify ({reason or 'EOF'}): refused there (denied, or its app unreachable; "
                      "its access log says why)")
        super().finish(result, reason)

    def _attempt(self) -> None:
        spec = self.lst.spec
        m = self.lst.pool.pick(self.loop.time(), self.tried)
        if m is None:
            why = "; ".join(self.errors) if self.errors else f"no instances of {spec.name}"
            return self.finish("upstream-connect-failure", why)
        if self.tried:
            self.add_flag("retried")
        self.member = m
        self.tried.append(m)
        self.up_addr = m.instance.address
        self.phase = "dial"
        self.dial_begin(m.instance.host, m.instance.port, spec.connect_timeout)

    def on_dial_ok(self, sock) -> None:
        eng = self.lst.engine
        self.phase = "handshake"
        self.tls_begin(sock, eng.contexts.client, False, eng.handshake_timeout, self.lst.spec.sni)

    def on_dial_failed(self, reason: str) -> None:
        self._attempt_failed(reason)

    def on_handshake_failed(self, reason: str, detail: str) -> None:
        self._drop_tls()
        self._attempt_failed(f"tls {reason}: {detail}")

    def _drop_tls(self) -> None:
        if self.t is not None:
            self.loop.remove_reader(self.tfd)
            self.loop.remove_writer(self.tfd)
            self.t.close()
        self.t = self.obj = self.inc = self.out = self.pend_t = None
        self.tfd = -1

    def _attempt_failed(self, reason: str) -> None:
        lst = self.lst
        m, self.member = self.member, None
        self.errors.append(f"{m.instance.address}: {reason}")
        if lst.pool.connect_failed(m, self.loop.time()):
            lst.engine.stats.ejections[lst.spec.name] += 1
            log.warning("upstream %s: ejecting %s after %d consecutive connect failures (last: %s)",
                        lst.spec.name, m.instance.address, lst.pool.eject_after, reason)
        if len(self.tried) < lst.spec.max_attempts:
            return self._attempt()
        self.finish("upstream-connect-failure", "; ".join(self.errors))

    def on_handshake(self) -> None:
        lst = self.lst
        m = self.member
        expected = m.instance.spiffe_id or lst.spec.spiffe_id
        uris = self.peer_uris()
        if uris != (expected,):
            lst.pool.connect_failed(m, self.loop.time())
            self.member = None
            got = ", ".join(uris) or "no URI SAN"
            return self.finish("upstream-identity-mismatch", f"{m.instance.address} presented {got}; expected {expected}")
        lst.pool.connect_ok(m)
        self.linked = True
        lst.engine.stats.connect_latency[self.direction].observe(monotonic() - self.dial_t0)
        self.phase = "relay"
        self.relay_start()

    def on_closed(self) -> None:
        if self.linked and self.member is not None:
            self.lst.pool.released(self.member)
