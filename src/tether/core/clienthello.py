"""Sans-io TLS ClientHello parser: the SNI/ALPN peek behind egress routing and policy.

Pure core code. The proxy reads the first bytes a client sends, calls
`parse_client_hello(buffered)` after every read, and gets one of three answers:
a `ClientHello` (route on it, then forward every buffered byte unchanged), `None`
("need more bytes": read again, within the proxy's own size and time limits), or
`ValueError` (not a TLS ClientHello: the caller decides, e.g. plain TCP or close).
Nothing else is ever raised, whatever the input (tests/core/test_clienthello.py fuzzes it).

Follows RFC 8446 (records and ClientHello), RFC 6066 (server_name) and RFC 7301 (ALPN).
A ClientHello may be split across several handshake records; each record is at most
2^14 bytes of payload and never empty. Noise is reported as early as the bytes allow,
so a plaintext client is told apart after its first byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RECORD_HEADER = 5
#: RFC 8446 5.1: TLSPlaintext.length MUST NOT exceed 2^14.
MAX_RECORD_PAYLOAD = 1 << 14
#: Larger ClientHellos are refused rather than buffered. Real ones are a few hundred bytes
#: to ~2 KiB (post-quantum key shares); 64 KiB is the cap Envoy's TLS inspector uses too.
MAX_CLIENT_HELLO = 64 * 1024
#: version(2) random(32) session_id_len(1) suites_len(2) one suite(2) comp_len(1) one method(1)
MIN_CLIENT_HELLO = 41
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

# Host names as they appear in SNI: DNS characters plus '_' (used in the wild); no IP
# literals with ':' and nothing that could break an access-log line.
_SNI = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")


@dataclass(frozen=True, slots=True)
class ClientHello:
    legacy_version: int  # ClientHello.legacy_version, 0x0303 for TLS 1.2 and 1.3
    sni: str | None  # host_name from server_name, as sent (callers normalise case)
    alpn: tuple[str, ...] = ()  # protocol names in client preference order (latin-1, lossless)
    supported_versions: tuple[int, ...] = ()  # from supported_versions; 0x0304 means TLS 1.3 offered


def parse_client_hello(data: bytes | bytearray | memoryview) -> ClientHello | None:
    """Parse the ClientHello at the start of `data`; None = need more bytes; ValueError = not one."""
    body = _reassemble(bytes(data))
    if body is None:
        return None
    return _parse_body(body)


def _reassemble(data: bytes) -> bytes | None:
    """The ClientHello body from one or more handshake records, or None if incomplete."""
    handshake = bytearray()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + RECORD_HEADER]
        if header[0] != CONTENT_HANDSHAKE:
            raise ValueError(f"not a TLS handshake record (content type {header[0]})")
        if len(header) > 1 and header[1] != 3:
            raise ValueError(f"not a TLS record (version major {header[1]})")
        if len(header) > 2 and header[2] > 4:
            raise ValueError(f"unknown TLS record version 3.{header[2]}")
        if len(header) < RECORD_HEADER:
            return None
        length = int.from_bytes(header[3:5], "big")
        if length == 0:
            raise ValueError("empty handshake record (forbidden by RFC 8446 5.1)")
        if length > MAX_RECORD_PAYLOAD:
            raise ValueError(f"TLS record of {length} bytes exceeds the 2^14 limit")
        fragment = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        handshake += fragment
        pos += RECORD_HEADER + length
        body = _complete_message(handshake)
        if body is not None:
            return body
        if len(fragment) < length:
            return None  # this record is still arriving
    return None


def _complete_message(handshake: bytearray) -> bytes | None:
    """Check the handshake header as far as it has arrived; the body once it is all there."""
    if not handshake:
        return None
    if handshake[0] != HANDSHAKE_CLIENT_HELLO:
        raise ValueError(f"first handshake message is type {handshake[0]}, not ClientHello")
    if len(handshake) < 4:
        return None
    length = int.from_bytes(handshake[1:4], "big")
    if length < MIN_CLIENT_HELLO:
        raise ValueError(f"ClientHello of {length} bytes is too short to be valid")
    if length > MAX_CLIENT_HELLO:
        raise ValueError(f"ClientHello of {length} bytes exceeds the {MAX_CLIENT_HELLO}-byte limit")
    if len(handshake) < 4 + length:
        return None
    return bytes(handshake[4:4 + length])


class _Cursor:
    """Bounds-checked reads over a complete message; running short is malformation."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise ValueError(f"ClientHello truncated in {what}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def take_all(self) -> bytes:
        return self.take(self.left, "vector")

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, length_bytes: int, what: str) -> _Cursor:
        """A sub-cursor over a length-prefixed vector, skipping past it here."""
        n = self.uint(length_bytes, what)
        start = self.pos
        self.take(n, what)
        return _Cursor(self.data, start, start + n)

    @property
    def left(self) -> int:
        return self.end - self.pos


def _parse_body(body: bytes) -> ClientHello:
    c = _Cursor(body)
    version = c.uint(2, "legacy_version")
    if version >> 8 != 3:
        raise ValueError(f"ClientHello legacy_version {version:#06x} is not TLS")
    c.take(32, "random")
    if c.vector(1, "legacy_session_id").left > 32:
        raise ValueError("ClientHello session id longer than 32 bytes")
    suites = c.vector(2, "cipher_suites")
    if suites.left < 2 or suites.left % 2:
        raise ValueError("ClientHello cipher_suites length must be even and non-zero")
    if c.vector(1, "legacy_compression_methods").left < 1:
        raise ValueError("ClientHello offers no compression method")
    sni, alpn, versions = None, (), ()
    if c.left:  # extensions are optional before TLS 1.3 (RFC 5246 7.4.1.2)
        exts = c.vector(2, "extensions")
        if c.left:
            raise ValueError("bytes after the ClientHello extensions")
        seen: set[int] = set()
        while exts.left:
            ext_type = exts.uint(2, "extension type")
            ext = exts.vector(2, "extension data")
            if ext_type in seen:
                raise ValueError(f"extension {ext_type} appears twice")
            seen.add(ext_type)
            if ext_type == EXT_SERVER_NAME:
                sni = _server_name(ext)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(ext)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                versions = _versions(ext)
    return ClientHello(version, sni, alpn, versions)


def _whole(ext: _Cursor, length_bytes: int, what: str) -> _Cursor:
    inner = ext.vector(length_bytes, what)
    if ext.left:
        raise ValueError(f"{what}: bytes after the list")
    return inner


def _server_name(ext: _Cursor) -> str | None:
    names = _whole(ext, 2, "server_name list")
    host: str | None = None
    while names.left:
        name_type = names.uint(1, "server_name type")
        name = names.vector(2, "server_name").take_all()
        if name_type != 0:
            continue  # RFC 6066: unknown name types are ignored
        if host is not None:
            raise ValueError("server_name carries two host names")
        if not _SNI.fullmatch(name):
            raise ValueError("server_name host name is not a DNS name")
        host = name.decode("ascii")
    return host


def _alpn(ext: _Cursor) -> tuple[str, ...]:
    protos = _whole(ext, 2, "ALPN list")
    out = []
    while protos.left:
        name = protos.vector(1, "ALPN protocol").take_all()
        if not name:
            raise ValueError("empty ALPN protocol name")
        out.append(name.decode("latin-1"))
    if not out:
        raise ValueError("empty ALPN list")
    return tuple(out)


def _versions(ext: _Cursor) -> tuple[int, ...]:
    vs = _whole(ext, 1, "supported_versions")
    if vs.left < 2 or vs.left % 2:
        raise ValueError("supported_versions length must be even and non-zero")
    return tuple(vs.uint(2, "version") for _ in range(vs.left // 2))
