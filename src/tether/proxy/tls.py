"""TLS material and contexts for the proxy, and the names it gives handshake failures.

`TlsMaterial` is what the control plane hands the engine (leaf, chain, key, roots, our
SPIFFE ID). `build_contexts` turns it into a server and a client `ssl.SSLContext`:
TLS 1.2+ (1.3 preferred), client certificates required and verified against the roots,
no session tickets or resumption (every connection proves its identity afresh), and no
hostname check on the client side: the proxy compares the server's URI SAN with the exact
expected SPIFFE ID itself after the handshake (see `tether.proxy.der`).

OpenSSL is told not to rebuild our own chain on every handshake (see
`disable_auto_chain`): the leaf and `chain_pem` are sent as given.

Keys never touch a named file: `ssl.SSLContext.load_cert_chain` only reads paths, so the
PEM goes into an anonymous `memfd` (Linux) that is read back through /proc/self/fd/N and
closed at once. Where memfd is missing, a 0600 file in a fresh 0700 directory is used and
unlinked immediately after loading.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import tempfile
from dataclasses import dataclass

from tether.core.errors import InvalidInput

#: TLS 1.2 suites allowed besides the TLS 1.3 defaults: forward-secret AEAD only.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# OpenSSL X509_V_ERR_* codes reported by SSLCertVerificationError.verify_code.
_NOT_YET_VALID = 9
_EXPIRED = 10
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21, 27})

#: Every reason the proxy gives a failed handshake (metric label values: a closed set).
HANDSHAKE_REASONS = (
    "no-client-cert", "unknown-ca", "cert-expired", "cert-not-yet-valid", "bad-certificate",
    "plaintext-client", "http-client", "truncated-hello", "closed-before-hello",
    "peer-closed", "peer-rejected", "handshake-timeout", "protocol-error", "connection-reset",
)

_HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ")


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Our identity and trust, as PEM text. Built into SSL contexts in memory."""

    cert_pem: str  # the leaf
    key_pem: str
    roots_pem: tuple[str, ...]  # trust anchors (all current roots during a rotation)
    spiffe_id: str  # our own identity, e.g. spiffe://<td>/ns/default/dc/dc1/svc/web
    chain_pem: tuple[str, ...] = ()  # sent after the leaf: intermediates, cross-signed roots

    def __repr__(self) -> str:  # keys must never reach a log line
        return f"TlsMaterial(spiffe_id={self.spiffe_id!r}, roots={len(self.roots_pem)})"

    def problems(self) -> list[str]:
        """Every structural problem, for an error that names them all at once."""
        out = []
        if "BEGIN CERTIFICATE" not in self.cert_pem:
            out.append("cert_pem: not a PEM certificate")
        if "PRIVATE KEY" not in self.key_pem:
            out.append("key_pem: not a PEM private key")
        if not self.roots_pem or not all("BEGIN CERTIFICATE" in r for r in self.roots_pem):
            out.append("roots_pem: need at least one PEM root certificate")
        if not self.spiffe_id.startswith("spiffe://"):
            out.append(f"spiffe_id: {self.spiffe_id!r} is not a spiffe:// URI")
        return out


@dataclass(frozen=True, slots=True)
class TlsContexts:
    server: ssl.SSLContext  # for the public (inbound) listener
    client: ssl.SSLContext  # for upstream dials
    spiffe_id: str


def build_contexts(material: TlsMaterial) -> TlsContexts:
    """Both SSL contexts for `material`; raises InvalidInput naming every problem."""
    problems = material.problems()
    if problems:
        raise InvalidInput("invalid TLS material: " + "; ".join(problems))
    try:
        server = _base(ssl.PROTOCOL_TLS_SERVER, material)
        server.options |= ssl.OP_NO_TICKET
        server.num_tickets = 0  # TLS 1.3: no resumption tickets; every connection is verified in full
        client = _base(ssl.PROTOCOL_TLS_CLIENT, material)
        client.check_hostname = False  # the URI SAN is compared exactly after the handshake
    except ssl.SSLError as e:
        raise InvalidInput(f"invalid TLS material for {material.spiffe_id}: {e}") from e
    return TlsContexts(server, client, material.spiffe_id)


def _base(protocol: int, material: TlsMaterial) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata="\n".join(material.roots_pem))
    pem = material.cert_pem.rstrip() + "\n" + "".join(c.rstrip() + "\n" for c in material.chain_pem)
    load_chain_in_memory(ctx, pem + material.key_pem)
    disable_auto_chain(ctx)
    return ctx


_NO_AUTO_CHAIN = 0x8  # SSL_MODE_NO_AUTO_CHAIN
_CTRL_MODE = 33  # SSL_CTRL_MODE (SSL_CTX_set_mode)
_libssl = None  # ctypes handle of the libssl this process's _ssl module uses, or False


def _libssl_handle():
    """The libssl mapped into this process (the one `_ssl` links), through ctypes; None if unsure."""
    global _libssl
    if _libssl is None:
        _libssl = False
        try:
            import ctypes

            with open("/proc/self/maps") as f:
                paths = {line.split()[-1] for line in f if "/libssl.so" in line}
            if len(paths) == 1:
                lib = ctypes.CDLL(paths.pop())
                for name, res, args in (("SSL_CTX_ctrl", ctypes.c_long, [ctypes.c_void_p, ctypes.c_int,
                                                                         ctypes.c_long, ctypes.c_void_p]),
                                        ("SSL_CTX_get_options", ctypes.c_uint64, [ctypes.c_void_p])):
                    fn = getattr(lib, name)
                    fn.restype, fn.argtypes = res, args
                _libssl = lib
        except (OSError, AttributeError, ImportError):
            pass
    return _libssl or None


def disable_auto_chain(ctx: ssl.SSLContext) -> bool:
    """Set SSL_MODE_NO_AUTO_CHAIN on `ctx`; True if it was set.

    Without it OpenSSL rebuilds and re-verifies our *own* certificate chain from the trust
    store on every handshake in which it sends our certificate (X509_verify_cert: one
    ECDSA verify plus chain building, ~30 % of a full mTLS handshake's CPU, measured with
    both ends in memory). HAProxy avoids it by giving OpenSSL an explicit chain; Python's
    ssl module has no API for either, so the mode is set through ctypes on the SSL_CTX
    behind the context. The chain we send is then exactly the leaf plus `chain_pem`
    (intermediates must be listed there, as the agent's leaf PEM already does).

    Defensive: CPython only; the SSL_CTX pointer (the first field after the object
    header of the context object, unchanged since Python 3.2) must be non-null, aligned
    and inside a mapped region, and SSL_CTX_get_options() through it must equal
    ctx.options; otherwise nothing is touched and handshakes just cost more.
    TETHER_PROXY_AUTO_CHAIN=1 in the environment keeps OpenSSL's default.
    """
    if os.environ.get("TETHER_PROXY_AUTO_CHAIN") == "1" or sys.implementation.name != "cpython":
        return False
    lib = _libssl_handle()
    if lib is None:
        return False
    import ctypes

    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or ptr % 8 or not _mapped(ptr):
        return False
    if lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        return False
    return bool(lib.SSL_CTX_ctrl(ptr, _CTRL_MODE, _NO_AUTO_CHAIN, None) & _NO_AUTO_CHAIN)


def _mapped(addr: int) -> bool:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = line.split(None, 1)[0].split("-")
            if int(lo, 16) <= addr < int(hi, 16) - 4096 and line.split()[1].startswith("rw"):
                return True
    return False


def load_chain_in_memory(ctx: ssl.SSLContext, bundle_pem: str) -> None:
    """`ctx.load_cert_chain` from a PEM bundle (certs + key) without a named file."""
    data = bundle_pem.encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tether-tls", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            try:
                ctx.load_cert_chain(f"/proc/self/fd/{fd}")
                return
            except FileNotFoundError:
                pass  # no /proc: fall through to the private-directory method
        finally:
            os.close(fd)
    d = tempfile.mkdtemp(prefix="tether-tls-")  # mkdtemp creates it 0700
    try:
        path = os.path.join(d, "bundle.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def match_first_bytes(head: bytes) -> str | None:
    """Name what a non-TLS client sent first, or None if it looks like a TLS handshake record."""
    if not head or head[0] == 0x16:
        return None
    if head[:4] in _HTTP_METHODS:
        return "http-client"
    return "plaintext-client"


def classify_tls_error(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) for an exception raised by SSLObject.do_handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        detail = getattr(exc, "verify_message", "") or str(exc)
        if code == _EXPIRED:
            return "cert-expired", detail
        if code == _NOT_YET_VALID:
            return "cert-not-yet-valid", detail
        if code in _UNKNOWN_ISSUER:
            return "unknown-ca", detail
        return "bad-certificate", detail
    reason = (getattr(exc, "reason", None) or "").upper()
    detail = reason.lower() or str(exc)
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no-client-cert", detail
    if reason == "HTTP_REQUEST":
        return "http-client", detail
    if reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"):
        return "plaintext-client", detail
    if reason.startswith(("TLSV1_ALERT", "SSLV3_ALERT", "TLSV13_ALERT")):
        return "peer-rejected", detail
    if reason in ("CERTIFICATE_VERIFY_FAILED",):
        return "bad-certificate", detail
    return "protocol-error", detail
