"""The public listener: mutual TLS in, authorize the client's SPIFFE ID, plain TCP to the app.

Per connection: TLS handshake as server (client certificate required, chain verified
against the roots) -> read the client's URI SAN -> `engine.check(source, ip, port)` ->
on deny close and log the rule; on allow dial the local application (connect timeout)
-> relay. The connection stays registered so a later `update_authorizer` can re-check it.

Detected per connection: when the first bytes are not a TLS handshake record, the client
is plaintext. When the authorizer decides plaintext (the sidecar's does), it is authorized
as such (`engine.check(..., plaintext=True)`: only an `unauthenticated` rule for its
address admits it, core/authz.py) and, if admitted, relayed unchanged (relay.ClearSession),
else denied; with any other authorizer it is refused as a handshake failure, as before. A TLS client without a
certificate still fails the handshake (`no-client-cert`).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import monotonic

from tether.core.admission import DEFAULT_MAX_PENDING_HANDSHAKES
from tether.core.errors import InvalidInput
import ssl

from tether.proxy.conn import Conn
from tether.proxy.relay import ClearSession

#: Connect timeout towards the local app and the upstream instances (Consul's
#: local_connect_timeout_ms / connect_timeout_ms default to 5000).
DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class InboundSpec:
    """The public mTLS listener of one local service."""

    service: str  # the local service: destination in logs, metrics and authorization
    local_app_port: int
    local_app_host: str = "127.0.0.1"
    bind_host: str = "0.0.0.0"  # public: other hosts' sidecars connect here (Consul's default)
    bind_port: int = 0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: Accepted connections that may be in their TLS handshake at once (core/admission.py).
    max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES

    def validate(self) -> None:
        problems = []
        if not self.service:
            problems.append("service: must not be empty")
        if not 0 < self.local_app_port < 65536:
            problems.append(f"local_app_port: {self.local_app_port} is not a TCP port")
        if not 0 <= self.bind_port < 65536:
            problems.append(f"bind_port: {self.bind_port} is not a TCP port")
        if not self.connect_timeout > 0:
            problems.append(f"connect_timeout: {self.connect_timeout} must be > 0 seconds")
        if not self.max_pending_handshakes >= 1:
            problems.append(f"max_pending_handshakes: {self.max_pending_handshakes} must be at least 1")
        if problems:
            raise InvalidInput("inbound listener: " + "; ".join(problems))


class InboundConn(Conn):
    __slots__ = ("rule", "plaintext")

    direction = "inbound"

    def __init__(self, lst, client, addr) -> None:
        super().__init__(lst, client, addr)
        self.rule = ""
        self.plaintext = False
        self.t = client  # the accepted socket carries TLS (or, once detected, plaintext)

    def begin(self) -> None:
        eng = self.lst.engine
        self.tls_begin(self.t, eng.contexts.server, True, eng.handshake_timeout)

    def destination(self) -> str:
        return self.lst.spec.service

    def byte_counts(self) -> tuple[int, int]:
        return self.n_t, self.n_p

    def on_handshake(self) -> None:
        uris = () if self.plaintext else self.peer_uris()
        self.source = next((u for u in uris if u.startswith("spiffe://")), None)
        self.phase = "authorize"
        if not self.authorize(self.lst.engine.authorizer):
            return
        spec = self.lst.spec
        self.phase = "dial"
        self.up_addr = f"{spec.local_app_host}:{spec.local_app_port}"
        self.dial_begin(spec.local_app_host, spec.local_app_port, spec.connect_timeout)

    def on_not_tls(self, kind: str, n: int) -> None:
        """A plaintext client: authorize it as one; if admitted, relay its bytes as they are.
        An authorizer that cannot decide plaintext (mutual TLS only) refuses it as before."""
        if getattr(self.lst.engine.authorizer, "plaintext", None) is None:
            return super().on_not_tls(kind, n)
        self.end_handshake_phase()
        self.plaintext = True
        self.add_flag("plaintext")
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ClearSession(self.inc, self.out)
        self.inc.write(self.rmv[:n])  # the first bytes: delivered to the app once it is dialed
        self.loop.add_reader(self.tfd, self._park_t)
        self.on_handshake()

    def authorize(self, authorizer) -> bool:
        """Run `authorizer` for this connection; on deny, count it and close. True if allowed."""
        eng = self.lst.engine
        allowed, reason, audit = eng.check(authorizer, self.source, self.peer_ip, self.lst.port,
                                           plaintext=self.plaintext)
        if audit:
            self.add_flag("audit")
        if allowed:
            self.rule = reason
            return True
        eng.stats.denials[(self.source or "unknown", self.lst.spec.service)] += 1
        self.finish("denied", reason)
        return False

    def on_dial_ok(self, sock) -> None:
        eng = self.lst.engine
        eng.stats.connect_latency[self.direction].observe(monotonic() - self.dial_t0)
        self.p = sock
        self.pfd = sock.fileno()
        self.phase = "relay"
        self.relay_start()

    def on_dial_failed(self, reason: str) -> None:
        self.finish("upstream-connect-failure", f"local app {self.up_addr}: {reason}")

    def finish(self, result: str, reason: str = "") -> None:
        if result == "allowed" and not reason:
            reason = self.rule
        super().finish(result, reason)
