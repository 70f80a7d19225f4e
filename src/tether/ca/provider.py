"""The CA provider interface, its value types, and the signing steps every provider shares.

A provider holds one signing key and answers four questions: what state must the
server persist (`state()`, which includes the private key: the server keeps it in its
own store and never sends it to agents), what is my root (`active_root()`), sign this
leaf CSR (`sign_leaf`), and cross-sign this new root (`cross_sign`, for rotation).
Built-in and external-PEM providers live next to this module; Vault etc. can follow
by implementing the same Protocol.

`CARoot.to_consul_json()` and `SignedLeaf.to_consul_json()` give the exact shapes of
Consul's `/v1/agent/connect/ca/roots` entries and `/v1/agent/connect/ca/leaf/:service`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.ca import x509 as tx
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS, validate_leaf_ttl
from tether.core.errors import InvalidInput, PermissionDenied
from tether.core.spiffe import SpiffeId, SpiffeKind, format_spiffe_id

ProviderState = dict[str, Any]

#: Leaves and cross-signed certs start this far in the past, so a peer whose clock runs
#: a little slow still accepts them (Consul backdates by the same minute).
BACKDATE = timedelta(minutes=1)
_UINT64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class CARoot:
    """One entry of the served roots list (Consul's structs.CARoot)."""

    id: str  # colon-hex SHA-1 of the root cert DER, as Consul computes it
    name: str
    serial_number: int
    signing_key_id: str  # colon-hex SubjectKeyIdentifier of the root
    not_before: datetime
    not_after: datetime
    root_cert_pem: str
    intermediate_certs: tuple[str, ...]  # sent along with leaves signed under this root
    active: bool
    private_key_type: str
    private_key_bits: int
    trust_domain: str
    #: When this root stopped being active; drives pruning. Not part of Consul's JSON.
    rotated_out_at: datetime | None = None

    @classmethod
    def from_cert(
        cls, root_cert_pem: str, *, name: str, trust_domain: str, intermediate_certs: Sequence[str] = ()
    ) -> CARoot:
        """An active root entry describing `root_cert_pem`."""
        cert = tx.load_certificate_pem(root_cert_pem, field="RootCert")
        key_type, key_bits = tx.key_info(cert.public_key(), field="RootCert public key")
        return cls(
            id=tx.cert_id(cert),
            name=name,
            serial_number=cert.serial_number,
            signing_key_id=tx.colon_hex(tx.subject_key_id(cert)),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            root_cert_pem=_with_newline(root_cert_pem),
            intermediate_certs=tuple(_with_newline(p) for p in intermediate_certs),
            active=True,
            private_key_type=key_type,
            private_key_bits=key_bits,
            trust_domain=trust_domain.lower(),
        )

    def to_consul_json(self, *, create_index: int = 0, modify_index: int = 0) -> dict[str, Any]:
        """One element of Consul's `Roots` array."""
        return {
            "ID": self.id,
            "Name": self.name,
            # Consul sends big.Int.Uint64(): the low 64 bits of the serial.
            "SerialNumber": self.serial_number & _UINT64,
            "SigningKeyID": self.signing_key_id,
            "ExternalTrustDomain": cluster_id_of(self.trust_domain),
            "NotBefore": format_go_time(self.not_before),
            "NotAfter": format_go_time(self.not_after),
            "RootCert": self.root_cert_pem,
            "IntermediateCerts": list(self.intermediate_certs) or None,
            "Active": self.active,
            "PrivateKeyType": self.private_key_type,
            "PrivateKeyBits": self.private_key_bits,
            "CreateIndex": create_index,
            "ModifyIndex": modify_index,
        }

    def to_dict(self) -> dict[str, Any]:
        """Tether's own persisted form (JSON-safe), inverse of from_dict."""
        return {
            "id": self.id,
            "name": self.name,
            "serial_number": str(self.serial_number),  # may exceed 64 bits for external roots
            "signing_key_id": self.signing_key_id,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "root_cert_pem": self.root_cert_pem,
            "intermediate_certs": list(self.intermediate_certs),
            "active": self.active,
            "private_key_type": self.private_key_type,
            "private_key_bits": self.private_key_bits,
            "trust_domain": self.trust_domain,
            "rotated_out_at": self.rotated_out_at.isoformat() if self.rotated_out_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CARoot:
        try:
            rotated = data.get("rotated_out_at")
            return cls(
                id=str(data["id"]),
                name=str(data["name"]),
                serial_number=int(data["serial_number"]),
                signing_key_id=str(data["signing_key_id"]),
                not_before=datetime.fromisoformat(data["not_before"]),
                not_after=datetime.fromisoformat(data["not_after"]),
                root_cert_pem=str(data["root_cert_pem"]),
                intermediate_certs=tuple(str(p) for p in data["intermediate_certs"]),
                active=bool(data["active"]),
                private_key_type=str(data["private_key_type"]),
                private_key_bits=int(data["private_key_bits"]),
                trust_domain=str(data["trust_domain"]),
                rotated_out_at=datetime.fromisoformat(rotated) if rotated else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"stored CA root is malformed ({exc!r}); it was not written by Tether") from None


@dataclass(frozen=True, slots=True)
class SignedLeaf:
    """A freshly signed leaf certificate (the private key stays with the agent)."""

    cert_pem: str  # the leaf alone; send the active root's intermediate_certs with it
    serial_number: str  # colon-hex
    valid_after: datetime
    valid_before: datetime
    service: str
    service_uri: str

    def bundle_pem(self, intermediate_certs: Sequence[str] = ()) -> str:
        """The leaf followed by the intermediates a peer needs to reach a root it trusts."""
        return self.cert_pem + "".join(_with_newline(p) for p in intermediate_certs)

    def to_consul_json(
        self,
        private_key_pem: str,
        intermediate_certs: Sequence[str] = (),
        *,
        create_index: int = 0,
        modify_index: int = 0,
    ) -> dict[str, Any]:
        """Consul's leaf response; CertPEM carries the intermediates after the leaf, as Consul's does."""
        return {
            "SerialNumber": self.serial_number,
            "CertPEM": self.bundle_pem(intermediate_certs),
            "PrivateKeyPEM": private_key_pem,
            "Service": self.service,
            "ServiceURI": self.service_uri,
            "ValidAfter": format_go_time(self.valid_after),
            "ValidBefore": format_go_time(self.valid_before),
            "CreateIndex": create_index,
            "ModifyIndex": modify_index,
        }


@runtime_checkable
class CAProvider(Protocol):
    """What the server needs from a CA. Methods are sync and CPU-bound (fine to call from async code)."""

    @property
    def kind(self) -> str: ...  # "builtin", "external", ...

    @property
    def trust_domain(self) -> str: ...

    def state(self) -> ProviderState: ...

    def active_root(self) -> CARoot: ...

    def sign_leaf(
        self, csr_pem: str, *, expected: SpiffeId, ttl_seconds: float, now: datetime,
        min_ttl_seconds: float = MIN_LEAF_TTL_SECONDS,
    ) -> SignedLeaf: ...

    def cross_sign(
        self, new_root_cert_pem: str, new_key_public: tx.PublicKey | None = None, *, now: datetime
    ) -> tuple[str, ...]: ...


def provider_from_state(state: ProviderState) -> CAProvider:
    """Rebuild a provider from what `state()` returned (the server's persisted copy)."""
    # Imported here because both implementations import this module.
    from tether.ca.builtin import BuiltinCA
    from tether.ca.external import ExternalCA

    kind = state.get("provider") if isinstance(state, dict) else None
    if kind == BuiltinCA.kind:
        return BuiltinCA.from_state(state)
    if kind == ExternalCA.kind:
        return ExternalCA.from_state(state)
    raise InvalidInput(f"CA provider state has unknown provider {kind!r}; expected 'builtin' or 'external'")


def consul_roots_json(roots: Sequence[CARoot], trust_domain: str) -> dict[str, Any]:
    """The body of `GET /v1/agent/connect/ca/roots` (indexes are added by the caller's store)."""
    active = next((r.id for r in roots if r.active), "")
    return {
        "ActiveRootID": active,
        "TrustDomain": trust_domain,
        "Roots": [r.to_consul_json() for r in roots],
    }


def issue_leaf(
    csr_pem: str,
    *,
    expected: SpiffeId,
    signer_key: tx.PrivateKey,
    signer_cert: x509.Certificate,
    trust_domain: str,
    ttl_seconds: float,
    now: datetime,
    min_ttl_seconds: float = MIN_LEAF_TTL_SECONDS,
) -> SignedLeaf:
    """Check a leaf CSR against the identity the requester may have, then sign it.

    Shared by every provider that holds its signing key locally. Nothing is changed
    when a check fails. `min_ttl_seconds` lowers the TTL floor for tests only.
    """
    ttl = validate_leaf_ttl(ttl_seconds, min_seconds=min_ttl_seconds)
    csr = _checked_csr(csr_pem, expected, trust_domain)
    _require_signer_current(signer_cert, now)
    # A leaf never outlives the certificate that signed it.
    not_after = min(now + timedelta(seconds=ttl), signer_cert.not_valid_after_utc)
    cert = _leaf_cert(csr.public_key(), expected, signer_key, signer_cert, now - BACKDATE, not_after)
    return SignedLeaf(
        cert_pem=tx.format_cert_pem(cert),
        serial_number=tx.serial_colon_hex(cert.serial_number),
        valid_after=cert.not_valid_before_utc,
        valid_before=cert.not_valid_after_utc,
        service=expected.service,
        service_uri=format_spiffe_id(expected),
    )


def _checked_csr(csr_pem: str, expected: SpiffeId, trust_domain: str) -> x509.CertificateSigningRequest:
    """The parsed CSR, if it asks for exactly `expected`; InvalidInput / PermissionDenied otherwise."""
    if expected.kind is not SpiffeKind.SERVICE or expected.trust_domain != trust_domain:
        raise InvalidInput(
            f"expected identity {format_spiffe_id(expected)!r} is not a service in trust domain {trust_domain!r}"
        )
    csr, requested = tx.parse_csr(csr_pem)
    if requested.trust_domain != trust_domain:
        raise PermissionDenied(
            f"CSR names trust domain {requested.trust_domain!r}; this CA signs only {trust_domain!r}"
        )
    if requested != expected:
        raise PermissionDenied(
            f"CSR asks for {format_spiffe_id(requested)!r} but the requester may only get "
            f"{format_spiffe_id(expected)!r}"
        )
    return csr


def _leaf_cert(
    public: tx.PublicKey,
    spiffe: SpiffeId,
    signer_key: tx.PrivateKey,
    signer_cert: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    is_rsa = tx.key_info(public)[0] == "rsa"
    # CN is the service name: one DNS label, so OpenSSL never mistakes it for a host name
    # that the root's DNS name constraint would have to permit.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe.service[:64])])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
        data_encipherment=False, key_agreement=not is_rsa, key_cert_sign=False,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )
    both_ends = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(format_spiffe_id(spiffe))])
    return (
        _base_builder(signer_cert, public, not_before, not_after, x509.random_serial_number())
        .subject_name(subject)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(both_ends, critical=False)
        .add_extension(san, critical=False)
        .sign(signer_key, tx.signature_hash(signer_key))
    )


def cross_sign_root(
    new_root_cert_pem: str,
    new_key_public: tx.PublicKey | None,
    *,
    signer_key: tx.PrivateKey,
    signer_cert: x509.Certificate,
    now: datetime,
) -> x509.Certificate:
    """A CA cert with the new root's subject, key and extensions, issued by `signer_cert`.

    A peer that trusts only the signer's root can then chain leaves of the new root:
    leaf -> this cert -> (signer chain) -> old root.
    """
    new_root = tx.load_certificate_pem(new_root_cert_pem, field="new RootCert")
    if new_key_public is not None and new_key_public != new_root.public_key():
        raise InvalidInput("new root key does not match the public key in the new root certificate")
    constraints = _basic_constraints(new_root)
    if constraints is None or not constraints.ca:
        raise InvalidInput("new RootCert is not a CA certificate (basicConstraints CA:TRUE missing)")
    signer_limits = _basic_constraints(signer_cert)
    if signer_cert.subject != signer_cert.issuer and signer_limits is not None and signer_limits.path_length == 0:
        raise InvalidInput(
            f"cannot cross-sign: signing certificate {signer_cert.subject.rfc4514_string()!r} has pathLen 0"
        )
    _require_signer_current(signer_cert, now)
    not_after = min(new_root.not_valid_after_utc, signer_cert.not_valid_after_utc)
    builder = _base_builder(signer_cert, new_root.public_key(), now - BACKDATE, not_after, x509.random_serial_number())
    builder = builder.subject_name(new_root.subject).add_extension(
        x509.SubjectKeyIdentifier(tx.subject_key_id(new_root)), critical=False
    )
    for ext in new_root.extensions:
        # The issuer's key identifier is set by _base_builder and the SKI just above; the
        # rest (name constraints, SAN, key usage) is copied so the cert acts as the new root.
        if not isinstance(ext.value, (x509.AuthorityKeyIdentifier, x509.SubjectKeyIdentifier)):
            builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(signer_key, tx.signature_hash(signer_key))


def new_root_serial() -> int:
    """A random positive serial that fits Consul's uint64 JSON field (and JavaScript's 2^53)."""
    return secrets.randbits(52) + 1


def cluster_id_of(trust_domain: str) -> str:
    """`<cluster-uuid>` from `<cluster-uuid>.tether` (Consul's ExternalTrustDomain)."""
    head, dot, _ = trust_domain.partition(".")
    return head if dot else trust_domain


def format_go_time(value: datetime) -> str:
    """RFC 3339 in UTC with 'Z', as Go's time.Time marshals to JSON."""
    text = value.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "Z"


def _base_builder(
    signer_cert: x509.Certificate,
    public: tx.PublicKey,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.CertificateBuilder:
    issuer_ski = x509.SubjectKeyIdentifier(tx.subject_key_id(signer_cert))
    return (
        x509.CertificateBuilder()
        .issuer_name(signer_cert.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
    )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _require_signer_current(signer_cert: x509.Certificate, now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInput(f"now must be a timezone-aware datetime, got {now!r}")
    if now >= signer_cert.not_valid_after_utc:
        raise InvalidInput(
            f"CA certificate {signer_cert.subject.rfc4514_string()!r} expired at "
            f"{signer_cert.not_valid_after_utc.isoformat()}; rotate the CA before signing"
        )
    if now < signer_cert.not_valid_before_utc:
        raise InvalidInput(
            f"CA certificate {signer_cert.subject.rfc4514_string()!r} is not valid before "
            f"{signer_cert.not_valid_before_utc.isoformat()}; check the server clock"
        )


def _with_newline(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"
