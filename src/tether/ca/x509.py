"""X.509 helpers for the CA layer: keys, PEM loading with clear errors, CSRs, summaries.

Everything here wraps `cryptography` (no openssl subprocess). Loading functions turn
every library exception into InvalidInput naming the field, so the HTTP API and the
CLI can show the message as is. Private keys are never put into messages or logs.

Key policy (Consul's `PrivateKeyType`/`PrivateKeyBits`, narrowed): CA keys may be
EC P-256 or RSA 2048/4096; any loaded key must be EC P-256 or RSA >= 2048.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tether.core.errors import InvalidInput
from tether.core.spiffe import SpiffeId, SpiffeKind, format_spiffe_id, parse_spiffe_id

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

DEFAULT_KEY_TYPE = "ec"
DEFAULT_KEY_BITS = 256
#: What `generate_private_key` makes; loaded RSA keys may be any size >= 2048.
GENERATABLE = {("ec", 256), ("rsa", 2048), ("rsa", 4096)}
MIN_RSA_BITS = 2048


def generate_private_key(key_type: str = DEFAULT_KEY_TYPE, bits: int = DEFAULT_KEY_BITS) -> PrivateKey:
    """A new private key: EC P-256 (default) or RSA 2048/4096."""
    if (key_type, bits) not in GENERATABLE:
        raise InvalidInput(
            f"PrivateKeyType/PrivateKeyBits {key_type!r}/{bits!r} not supported; use ec/256, rsa/2048 or rsa/4096"
        )
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_info(key: PrivateKey | PublicKey | Any, *, field: str = "key") -> tuple[str, int]:
    """("ec", 256) or ("rsa", bits) for an allowed key; InvalidInput for anything else."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return "ec", 256
        raise InvalidInput(f"{field}: EC curve {key.curve.name} is not supported; use P-256 (secp256r1)")
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size >= MIN_RSA_BITS:
            return "rsa", key.key_size
        raise InvalidInput(f"{field}: RSA key of {key.key_size} bits is too small; use at least {MIN_RSA_BITS}")
    raise InvalidInput(f"{field}: key type {type(key).__name__} is not supported; use EC P-256 or RSA >= 2048")


def signature_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    """The digest used with `key` (SHA-256 for every key Tether accepts)."""
    return hashes.SHA256()


def load_private_key_pem(pem: str | bytes, *, field: str = "PrivateKey") -> PrivateKey:
    """Parse an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1) and check its type."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN" not in data:
        raise InvalidInput(f"{field}: no PEM data found; expected '-----BEGIN PRIVATE KEY-----'")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidInput(f"{field}: the key is encrypted; provide it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(f"{field}: not a valid PEM private key") from None
    key_info(key, field=field)
    return key  # type: ignore[return-value]


def format_private_key_pem(key: PrivateKey) -> str:
    """PKCS#8 PEM, unencrypted: the caller stores it in its own protected store."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_certificates_pem(pem: str | bytes, *, field: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (at least one), in file order."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InvalidInput(f"{field}: no PEM certificate found; expected '-----BEGIN CERTIFICATE-----'")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidInput(f"{field}: malformed PEM certificate ({exc})") from None


def load_certificate_pem(pem: str | bytes, *, field: str = "certificate") -> x509.Certificate:
    """Exactly one certificate from PEM."""
    certs = load_certificates_pem(pem, field=field)
    if len(certs) != 1:
        raise InvalidInput(f"{field}: expected one certificate, found {len(certs)}")
    return certs[0]


def format_cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_leaf_csr(spiffe_id: SpiffeId, key: PrivateKey) -> str:
    """A PEM CSR carrying `spiffe_id` as its only URI SAN, signed by `key` (the agent's leaf key)."""
    if spiffe_id.kind is not SpiffeKind.SERVICE:
        raise InvalidInput(f"leaf CSRs are for service identities, not {format_spiffe_id(spiffe_id)!r}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.service[:64])])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(format_spiffe_id(spiffe_id))]),
            critical=False,
        )
        .sign(key, signature_hash(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def parse_csr(pem: str | bytes, *, field: str = "CSR") -> tuple[x509.CertificateSigningRequest, SpiffeId]:
    """Load a CSR, check its self-signature and key type, and return it with its single SPIFFE ID."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in data:
        raise InvalidInput(f"{field}: no PEM data found; expected '-----BEGIN CERTIFICATE REQUEST-----'")
    try:
        csr = x509.load_pem_x509_csr(data)
        signature_ok = csr.is_signature_valid
    except Exception:  # malformed DER surfaces as several library exception types
        raise InvalidInput(f"{field}: malformed PEM certificate request") from None
    if not signature_ok:
        raise InvalidInput(f"{field}: signature does not verify; the CSR was altered or built with another key")
    key_info(csr.public_key(), field=f"{field} public key")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidInput(f"{field}: has no subjectAltName; it must carry exactly one SPIFFE URI") from None
    except ValueError as exc:
        raise InvalidInput(f"{field}: malformed extensions ({exc})") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or len(list(san)) != 1:
        raise InvalidInput(f"{field}: must carry exactly one SAN, a SPIFFE URI; found {len(list(san))} SAN(s)")
    return csr, parse_spiffe_id(uris[0])


def colon_hex(data: bytes) -> str:
    """Consul's `HexString`: lower-case hex bytes joined by ':' ("04:a1:ff")."""
    return ":".join(f"{b:02x}" for b in data)


def serial_colon_hex(serial: int) -> str:
    """A certificate serial number as Consul prints it (big-endian bytes, colon-hex)."""
    return colon_hex(serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"))


def cert_id(cert: x509.Certificate) -> str:
    """Consul's CA root ID: colon-hex SHA-1 of the certificate's DER (`CalculateCertFingerprint`)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return colon_hex(hashlib.sha1(der, usedforsecurity=False).digest())


def subject_key_id(cert: x509.Certificate) -> bytes:
    """The SubjectKeyIdentifier, or the RFC 5280 method-1 digest of the key when absent."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]


def cert_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def cert_spiffe_id(cert: x509.Certificate) -> SpiffeId | None:
    """The certificate's SPIFFE ID, or None when it has no parseable spiffe:// URI SAN."""
    for uri in cert_uris(cert):
        try:
            return parse_spiffe_id(uri)
        except InvalidInput:
            continue
    return None


def cert_summary(cert: x509.Certificate) -> dict[str, Any]:
    """What `tether ca inspect` prints for one certificate (no key material)."""
    public = cert.public_key()
    try:
        key_type, key_bits = key_info(public)
    except InvalidInput:
        key_type, key_bits = type(public).__name__, getattr(public, "key_size", 0)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    spiffe = cert_spiffe_id(cert)
    return {
        "spiffe_id": format_spiffe_id(spiffe) if spiffe else None,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_colon_hex(cert.serial_number),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_type": key_type,
        "key_bits": key_bits,
        "is_ca": is_ca,
        "id": cert_id(cert),
    }
