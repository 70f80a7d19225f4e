"""One egress connection's record, from accept to its access-log line.

Every connection, allowed or not, ends in exactly one line with the fields below (JSON by
default, key=value text with `log_format="text"`), written when it closes:

  start_time          ISO 8601 UTC, millisecond precision
  duration_ms         accept -> close
  role                sidecar | gateway
  source              the workload's SPIFFE ID (sidecar: our own; gateway: the client's)
  source_address      client ip:port
  destination         original destination ip:port (what the application dialled)
  sni                 the TLS server name the application sent, or null
  route               mesh | gateway | direct | originate | originate-postgres, or null
  entry               the matched external service, or null
  rule                the egress decision in words (names what was blocked, and why)
  upstream_address    where we connected, or null
  bytes_received      payload bytes from the client
  bytes_sent          payload bytes to the client
  result              allowed | denied | not-redirected | handshake-failure |
                      upstream-connect-failure | upstream-identity-mismatch |
                      origination-failure | client-closed | setup-timeout | idle-timeout |
                      drained | error
  reason              what went wrong after the decision, "" if nothing
"""

from __future__ import annotations

import time
from time import monotonic

from tether.proxy.accesslog import format_time


class Session:
    __slots__ = ("px", "role", "start", "t0", "source", "source_address", "destination", "sni", "route",
                 "entry", "rule", "upstream_address", "pre_received", "pre_sent", "held", "closed", "gate",
                 "sock", "deadline", "shed_reason")

    def __init__(self, px, role: str, addr) -> None:
        self.px = px
        self.role = role
        self.start = time.time()
        self.t0 = monotonic()
        self.source: str | None = None
        self.source_address = f"{addr[0]}:{addr[1]}" if addr else ""
        self.destination: str | None = None
        self.sni: str | None = None
        self.route: str | None = None
        self.entry: str | None = None
        self.rule = ""
        self.upstream_address: str | None = None
        self.pre_received = 0  # client bytes forwarded during setup (peeked ClientHello, startup packet)
        self.pre_sent = 0
        self.held = None  # (pool, member) of a mesh upstream, released at close
        self.closed = False
        self.gate = None  # the gateway listener's HandshakeGate, until the mesh handshake is over
        self.sock = None  # the client socket, while the gate tracks it
        self.deadline = None  # that handshake's asyncio.Timeout, which shed() moves to now
        self.shed_reason = ""
        px.stats.active[role] += 1

    def shed(self, reason: str) -> None:
        """The gate ends this handshake to make room (core/admission.py)."""
        self.shed_reason = reason
        if self.deadline is not None:
            self.deadline.reschedule(self.px.loop.time())

    def sock_for_gate(self):
        return self.sock

    def handshake_over(self) -> None:
        if self.gate is not None:
            self.gate.done(self)
            self.gate = self.sock = None

    def hold(self, pool, member) -> None:
        self.held = (pool, member)

    def finish(self, result: str, reason: str = "", received: int = 0, sent: int = 0) -> None:
        if self.closed:
            return
        self.closed = True
        self.handshake_over()
        px = self.px
        if self.held is not None:
            self.held[0].released(self.held[1])
            self.held = None
        received += self.pre_received
        sent += self.pre_sent
        px.stats.count_closed(self.role, self.route or "-", result, received, sent)
        px.access_log.write({
            "start_time": format_time(self.start), "duration_ms": round((monotonic() - self.t0) * 1000, 3),
            "role": self.role, "source": self.source, "source_address": self.source_address,
            "destination": self.destination, "sni": self.sni, "route": self.route, "entry": self.entry,
            "rule": self.rule, "upstream_address": self.upstream_address, "bytes_received": received,
            "bytes_sent": sent, "result": result, "reason": reason,
        })
