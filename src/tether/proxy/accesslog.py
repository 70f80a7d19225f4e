"""One access-log line per proxied connection, JSON (default) or key=value text.

Written when the connection ends (never per chunk). Lines are buffered and flushed at most
every `FLUSH_INTERVAL` seconds by a loop timer, and on `flush()` / engine close, so a busy
proxy makes one write syscall per batch instead of one per connection.

Fields (JSON keys; the text format uses the same names):
  start_time       ISO 8601 UTC, millisecond precision
  duration_ms      accept -> close
  direction        "inbound" (public mTLS listener) | "outbound" (upstream listener)
  source           client SPIFFE ID (inbound) / our own SPIFFE ID (outbound), or null
  source_address   client ip:port
  destination      destination service name
  upstream_address where we connected (local app, or the chosen instance), or null
  bytes_received   payload bytes from the client (Envoy's downstream convention)
  bytes_sent       payload bytes to the client
  result           allowed | denied | handshake-failure | upstream-connect-failure |
                   upstream-identity-mismatch | upstream-refused | idle-timeout |
                   authz-terminated | drained
  reason           why (deny rule, handshake failure reason, connect error), "" if none
  flags            extra facts: "audit" (would have been denied), "retried", "half-closed"
Keys and certificates are never logged.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

FORMATS = ("json", "text")
#: How long a finished connection's line may sit in memory before it is written.
FLUSH_INTERVAL = 0.2


_second = [-1, ""]  # the last whole second formatted, and its text (strftime is slow)


def format_time(ts: float) -> str:
    # Whole milliseconds first, then split: (ts - int(ts)) * 1000 loses bits (.998 for an
    # instant at .999); splitting one integer keeps second and milliseconds consistent.
    sec, ms = divmod(int(ts * 1000), 1000)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{ms:03d}Z"


def format_json(rec: dict) -> str:
    return json.dumps(rec, separators=(",", ":"))


def format_text(rec: dict) -> str:
    parts = []
    for k, v in rec.items():
        if isinstance(v, list):
            v = ",".join(v) or "-"
        elif v is None or v == "":
            v = "-"
        v = str(v)
        if " " in v or '"' in v:
            v = json.dumps(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


class AccessLog:
    """Buffered access-log writer bound to an event loop (for the flush timer)."""

    def __init__(self, stream: TextIO | None, fmt: str = "json") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access log format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.stream = stream
        self.format = format_json if fmt == "json" else format_text
        self._lines: list[str] = []
        self._timer = None
        self.loop = None

    def write(self, rec: dict) -> None:
        if self.stream is None:
            return
        self._lines.append(self.format(rec))
        if self._timer is None and self.loop is not None:
            self._timer = self.loop.call_later(FLUSH_INTERVAL, self.flush)
        elif self.loop is None:
            self.flush()

    def flush(self) -> None:
        self._timer = None
        if not self._lines or self.stream is None:
            return
        lines, self._lines = self._lines, []
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a full disk or closed stream must not take the proxy down

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
