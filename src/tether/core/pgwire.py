"""Sans-io PostgreSQL SSLRequest negotiation, for protocol-aware TLS origination.

Pure core code used by the proxy when an external service has `protocolHint: postgres`
and TLS origination. PostgreSQL does not start TLS on connect: the client first sends an
8-byte SSLRequest and the server answers one byte, 'S' (start TLS now) or 'N' (no).
A generic TLS-originating proxy therefore cannot front a PostgreSQL server; this
module lets Tether's proxy play both halves:

  application --plain--> proxy: `ClientNegotiation` reads what the application sends
      first. An SSLRequest (or GSSENCRequest) is answered 'N', so libpq continues in
      plaintext on this local hop; then the StartupMessage (or CancelRequest) arrives.
  proxy --TLS--> server: `ServerNegotiation` produces the SSLRequest, reads the answer
      and says StartTls; the proxy wraps the socket and forwards the startup bytes.

Each machine takes bytes and returns events; it raises ValueError on anything that is
not the protocol (and nothing else). Byte layouts follow the PostgreSQL protocol
documentation (Message Formats; SSL Session Encryption).
Security: bytes that arrive after an 'S' but before the TLS handshake are refused on
both sides: acting on them is the plaintext-injection flaw of CVE-2021-23214/23222.
"""

from __future__ import annotations

from dataclasses import dataclass

SSL_REQUEST_CODE = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE = 80877102  # 1234 << 16 | 5678
PROTOCOL_3 = 3
#: PostgreSQL's own MAX_STARTUP_PACKET_LENGTH: a longer first packet is refused there too.
MAX_STARTUP_PACKET = 10000
#: CancelRequest: 12 bytes + key; protocol 3.0 keys are 4 bytes, 3.2 keys at most 256.
MIN_CANCEL, MAX_CANCEL = 16, 12 + 256
#: An ErrorResponse in answer to SSLRequest is short; more is not an answer we accept.
MAX_ERROR_RESPONSE = 8192
TLS_HANDSHAKE_BYTE = 0x16  # a client using PostgreSQL 17 direct TLS starts with a TLS record


def format_ssl_request() -> bytes:
    """The 8-byte SSLRequest a client (here: the proxy) sends before starting TLS."""
    return (8).to_bytes(4, "big") + SSL_REQUEST_CODE.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class ReplyToClient:
    """Write `data` to the application, then keep feeding what it sends next."""

    data: bytes
    request: str  # "ssl" or "gssenc": what was asked for


@dataclass(frozen=True, slots=True)
class StartupReceived:
    raw: bytes  # the StartupMessage exactly as received: forward it to the server
    protocol: tuple[int, int]
    params: tuple[tuple[str, str], ...]  # e.g. (("user", "app"), ("database", "orders"))
    rest: bytes = b""  # bytes that followed it (normally none before authentication)


@dataclass(frozen=True, slots=True)
class CancelReceived:
    raw: bytes  # forward it to the server on a connection of its own
    pid: int
    secret: bytes


@dataclass(frozen=True, slots=True)
class DirectTlsReceived:
    """The client started TLS without an SSLRequest (libpq sslnegotiation=direct)."""

    data: bytes  # everything received so far, starting with the TLS record


@dataclass(frozen=True, slots=True)
class StartTls:
    """The server answered 'S': start the TLS handshake on this connection now."""


@dataclass(frozen=True, slots=True)
class ContinuePlain:
    """The server answered 'N' and plaintext is acceptable: send the startup as-is."""


@dataclass(frozen=True, slots=True)
class TlsRefused:
    """The server will not do TLS although it is required; close and log `message`."""

    message: str


ClientEvent = ReplyToClient | StartupReceived | CancelReceived | DirectTlsReceived
ServerEvent = StartTls | ContinuePlain | TlsRefused


class ClientNegotiation:
    """The application-facing side: classify its first messages and answer encryption requests.

    `accept_ssl=False` (origination) answers SSLRequest with 'N'. With `accept_ssl=True`
    the answer is 'S' and the caller must run a server-side TLS handshake before feeding
    the decrypted bytes that follow. GSSENCRequest is always answered 'N'.
    """

    __slots__ = ("_buf", "_accept_ssl", "_asked", "_done")

    def __init__(self, *, accept_ssl: bool = False) -> None:
        self._buf = bytearray()
        self._accept_ssl = accept_ssl
        self._asked: set[str] = set()
        self._done = False

    @property
    def done(self) -> bool:
        """True once a StartupMessage, CancelRequest or direct TLS has been seen."""
        return self._done

    def feed(self, data: bytes) -> list[ClientEvent]:
        if self._done:
            raise ValueError("PostgreSQL negotiation is finished; bytes now belong to the session")
        self._buf += data
        events: list[ClientEvent] = []
        while self._buf and not self._done:
            event = self._next()
            if event is None:
                break
            events.append(event)
        return events

    def _next(self) -> ClientEvent | None:
        buf = self._buf
        if not self._asked and buf[0] == TLS_HANDSHAKE_BYTE:
            self._done = True
            return DirectTlsReceived(bytes(buf))
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:4], "big")
        if not 8 <= length <= MAX_STARTUP_PACKET:
            raise ValueError(f"PostgreSQL startup packet length {length} is outside 8..{MAX_STARTUP_PACKET}")
        if len(buf) >= 8:
            _check_code(int.from_bytes(buf[4:8], "big"), length)
        if len(buf) < length:
            return None
        raw, rest = bytes(buf[:length]), bytes(buf[length:])
        del buf[:length]
        code = int.from_bytes(raw[4:8], "big")
        if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
            return self._encryption_request("ssl" if code == SSL_REQUEST_CODE else "gssenc", rest)
        self._done = True
        if code == CANCEL_REQUEST_CODE:
            return CancelReceived(raw, int.from_bytes(raw[8:12], "big"), raw[12:])
        return StartupReceived(raw, (code >> 16, code & 0xFFFF), _startup_params(raw[8:]), rest)

    def _encryption_request(self, kind: str, rest: bytes) -> ReplyToClient:
        if kind in self._asked:
            raise ValueError(f"client sent a second {kind.upper()} request")
        self._asked.add(kind)
        if kind == "ssl" and self._accept_ssl:
            if rest:
                raise ValueError(f"client sent {len(rest)} plaintext bytes after SSLRequest, before TLS")
            return ReplyToClient(b"S", kind)
        return ReplyToClient(b"N", kind)


def _check_code(code: int, length: int) -> None:
    """Refuse a first-packet code/length pair the server would refuse, as soon as both are in."""
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        if length != 8:
            raise ValueError(f"encryption request with length {length}; it is always 8")
    elif code == CANCEL_REQUEST_CODE:
        if not MIN_CANCEL <= length <= MAX_CANCEL:
            raise ValueError(f"CancelRequest with length {length}; expected {MIN_CANCEL}..{MAX_CANCEL}")
    elif code >> 16 != PROTOCOL_3:
        raise ValueError(f"PostgreSQL protocol {code >> 16}.{code & 0xFFFF} is not supported (only 3.x)")
    elif length < 9:
        raise ValueError("StartupMessage without its parameter list terminator")


def _startup_params(data: bytes) -> tuple[tuple[str, str], ...]:
    """Name/value C strings ending with one empty name (a lone NUL)."""
    if not data.endswith(b"\x00"):
        raise ValueError("StartupMessage parameter list is not NUL-terminated")
    parts = data[:-1].split(b"\x00")
    if parts == [b""]:
        return ()
    if parts[-1] != b"" or len(parts) % 2 != 1 or b"" in parts[:-1:2]:
        raise ValueError("StartupMessage parameters are not name/value pairs")
    text = [p.decode("utf-8", "replace") for p in parts[:-1]]
    return tuple(zip(text[::2], text[1::2]))


class ServerNegotiation:
    """The server-facing side: send `request()`, feed the reply, act on the one event."""

    __slots__ = ("_buf", "_require_tls", "_result")

    def __init__(self, *, require_tls: bool = True) -> None:
        self._buf = bytearray()
        self._require_tls = require_tls
        self._result: ServerEvent | None = None

    def request(self) -> bytes:
        return format_ssl_request()

    def feed(self, data: bytes) -> ServerEvent | None:
        """The server's answer so far: an event once decided, None while more bytes are needed."""
        if self._result is not None:
            raise ValueError("the server answered already; these bytes were not expected before TLS")
        self._buf += data
        if not self._buf:
            return None
        first = self._buf[0]
        if first in (ord("S"), ord("N")):
            if len(self._buf) > 1:
                # CVE-2021-23222: never act on bytes a man in the middle slipped in before TLS.
                raise ValueError(f"server sent {len(self._buf) - 1} unexpected bytes after its "
                                 f"{chr(first)!r} answer to SSLRequest")
            if first == ord("S"):
                self._result = StartTls()
            elif self._require_tls:
                self._result = TlsRefused("the PostgreSQL server answered 'N' to SSLRequest: it does not accept "
                                          "TLS, and TLS origination is required; enable ssl on the server or "
                                          "set tls.mode DISABLE on the external service")
            else:
                self._result = ContinuePlain()
            return self._result
        if first == ord("E"):
            return self._error_response()
        raise ValueError(f"server answered SSLRequest with byte {first:#04x}, not 'S', 'N' or an error")

    def _error_response(self) -> ServerEvent | None:
        if len(self._buf) < 5:
            return None
        length = int.from_bytes(self._buf[1:5], "big")
        if not 5 <= length <= MAX_ERROR_RESPONSE:
            raise ValueError(f"server ErrorResponse length {length} is outside 5..{MAX_ERROR_RESPONSE}")
        if len(self._buf) < 1 + length:
            return None
        if len(self._buf) > 1 + length:
            raise ValueError("server sent bytes after its ErrorResponse to SSLRequest")
        fields = bytes(self._buf[5:1 + length])
        if not fields.endswith(b"\x00"):
            raise ValueError("server ErrorResponse is not NUL-terminated")
        message = next((f[1:] for f in fields[:-1].split(b"\x00") if f[:1] == b"M"), b"")
        shown = "".join(c if c.isprintable() else "?" for c in message.decode("utf-8", "replace"))[:200]
        self._result = TlsRefused(f"the PostgreSQL server answered SSLRequest with an error: {shown!r}")
        return self._result
