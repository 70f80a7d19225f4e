"""Minimal DER reader: the URI SANs of an X.509 certificate, without parsing the rest.

The proxy reads the peer's SPIFFE ID once per connection. `ssl.getpeercert()` decodes the
whole certificate into dicts and `cryptography` costs an import of several MB, so this
walks just the TLV path Certificate > TBSCertificate > [3] extensions > subjectAltName >
GeneralNames and returns the `uniformResourceIdentifier` ([6] IA5String) entries.

Pure: bytes in, tuple out; malformed input raises ValueError and nothing else.
"""

from __future__ import annotations

_SEQUENCE = 0x30
_EXTENSIONS = 0xA3  # [3] EXPLICIT, constructed
_OID = 0x06
_BOOLEAN = 0x01
_OCTET_STRING = 0x04
_URI = 0x86  # GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
_SAN_OID = b"\x55\x1d\x11"  # 2.5.29.17


def _tlv(buf: bytes, off: int, end: int) -> tuple[int, int, int]:
    """Read one TLV at `off`; return (tag, value_start, value_end). Only low tag numbers."""
    if off + 2 > end:
        raise ValueError("DER: truncated header")
    tag = buf[off]
    if tag & 0x1F == 0x1F:
        raise ValueError("DER: high tag numbers are not used in certificates")
    first = buf[off + 1]
    off += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or off + count > end:
            raise ValueError("DER: bad length")
        length = int.from_bytes(buf[off:off + count], "big")
        off += count
    if off + length > end:
        raise ValueError("DER: value runs past its container")
    return tag, off, off + length


def _skip_to(buf: bytes, off: int, end: int, tag: int) -> tuple[int, int] | None:
    """Value range of the first child with `tag` among the TLVs in [off, end), or None."""
    while off < end:
        t, vs, ve = _tlv(buf, off, end)
        if t == tag:
            return vs, ve
        off = ve
    return None


def parse_uri_sans(der: bytes) -> tuple[str, ...]:
    """URI subjectAltNames of a DER certificate, in certificate order (may be empty)."""
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise ValueError("DER: expected bytes")
    buf = bytes(der)
    tag, cs, ce = _tlv(buf, 0, len(buf))
    if tag != _SEQUENCE:
        raise ValueError("DER: certificate is not a SEQUENCE")
    tag, ts, te = _tlv(buf, cs, ce)
    if tag != _SEQUENCE:
        raise ValueError("DER: tbsCertificate is not a SEQUENCE")
    found = _skip_to(buf, ts, te, _EXTENSIONS)
    if found is None:
        return ()
    tag, off, ee = _tlv(buf, *found)
    if tag != _SEQUENCE:
        raise ValueError("DER: extensions are not a SEQUENCE")
    while off < ee:
        tag, xs, xe = _tlv(buf, off, ee)
        if tag != _SEQUENCE:
            raise ValueError("DER: extension is not a SEQUENCE")
        tag, os_, oe = _tlv(buf, xs, xe)
        if tag != _OID:
            raise ValueError("DER: extension without an OID")
        if buf[os_:oe] == _SAN_OID:
            return _san_uris(buf, oe, xe)
        off = xe
    return ()


def _san_uris(buf: bytes, off: int, end: int) -> tuple[str, ...]:
    """URIs in a subjectAltName extension body: [critical BOOLEAN] OCTET STRING { GeneralNames }."""
    tag, vs, ve = _tlv(buf, off, end)
    if tag == _BOOLEAN:
        tag, vs, ve = _tlv(buf, ve, end)
    if tag != _OCTET_STRING or ve != end:
        raise ValueError("DER: subjectAltName value is not an OCTET STRING")
    tag, off, ge = _tlv(buf, vs, ve)
    if tag != _SEQUENCE or ge != ve:
        raise ValueError("DER: GeneralNames is not a SEQUENCE")
    out = []
    while off < ge:
        tag, vs, off = _tlv(buf, off, ge)
        if tag == _URI:
            try:
                out.append(buf[vs:off].decode("ascii"))
            except UnicodeDecodeError as e:
                raise ValueError("DER: URI SAN is not ASCII") from e
    return tuple(out)


_CACHE: dict[bytes, tuple[str, ...]] = {}
#: Distinct peer certificates remembered. A sidecar sees few (one per client instance and
#: leaf rotation); the cache is simply emptied when full.
CACHE_SIZE = 1024


def uri_sans_cached(der: bytes) -> tuple[str, ...]:
    """`parse_uri_sans` memoized on the certificate bytes (a mesh client reuses its leaf)."""
    uris = _CACHE.get(der)
    if uris is None:
        uris = parse_uri_sans(der)
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.clear()
        _CACHE[der] = uris
    return uris
