"""The built-in CA: one self-signed root per key, signing leaves directly.

Like Consul's built-in provider: the root is a SPIFFE signing certificate
(`URI:spiffe://<trust-domain>`), valid 10 years, with a critical NameConstraints
extension permitting DNS names in the trust domain only. It constrains no URIs:
`cryptography`'s verifier refuses every chain under a URI constraint, so the SPIFFE ID's
trust domain is checked by the mesh instead (docs/identity.md, "Name constraints").
Rotation ("give a new private key") is `from_private_key` plus ca.rotation.

The private key lives in `state()`; the server persists that in its own store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from tether.ca import x509 as tx
from tether.ca.provider import (
    BACKDATE,
    CARoot,
    ProviderState,
    SignedLeaf,
    cross_sign_root,
    issue_leaf,
    new_root_serial,
)
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS, ROOT_TTL_SECONDS
from tether.core.errors import InvalidInput
from tether.core.spiffe import SpiffeId, SpiffeKind, format_spiffe_id, signing_id, validate_trust_domain

ROOT_NAME = "Tether CA Primary Cert"


class BuiltinCA:
    """A CA whose root key Tether holds. Immutable after construction; signing never changes state."""

    kind = "builtin"

    def __init__(self, trust_domain: str, private_key: tx.PrivateKey, root_cert: x509.Certificate) -> None:
        self._trust_domain = validate_trust_domain(trust_domain)
        self._key = private_key
        self._root = root_cert
        _check_root(root_cert, private_key, self._trust_domain)
        self._root_pem = tx.format_cert_pem(root_cert)
        self._active = CARoot.from_cert(self._root_pem, name=ROOT_NAME, trust_domain=self._trust_domain)

    @classmethod
    def generate(cls, trust_domain: str, now: datetime, key_type: str = "ec", bits: int = 256) -> BuiltinCA:
        """A fresh key and root (first start, or rotation to a new generated key)."""
        validate_trust_domain(trust_domain)
        key = tx.generate_private_key(key_type, bits)
        return cls(trust_domain, key, make_root_cert(key, trust_domain, now))

    @classmethod
    def from_private_key(cls, private_key_pem: str, trust_domain: str, now: datetime) -> BuiltinCA:
        """A new root for an operator-supplied key ("rotate by giving a new private key")."""
        key = tx.load_private_key_pem(private_key_pem, field="PrivateKey")
        return cls(trust_domain, key, make_root_cert(key, trust_domain, now))

    @classmethod
    def from_root(cls, private_key_pem: str, root_cert_pem: str, trust_domain: str) -> BuiltinCA:
        """An operator-supplied key and root (Consul's `PrivateKey` + `RootCert` config)."""
        key = tx.load_private_key_pem(private_key_pem, field="PrivateKey")
        root = tx.load_certificate_pem(root_cert_pem, field="RootCert")
        return cls(trust_domain, key, root)

    @classmethod
    def from_state(cls, state: ProviderState) -> BuiltinCA:
        """Rebuild from `state()` as the server persisted it."""
        if not isinstance(state, dict) or state.get("provider") != cls.kind:
            raise InvalidInput("CA state is not a built-in provider state (provider != 'builtin')")
        try:
            return cls.from_root(state["private_key_pem"], state["root_cert_pem"], state["trust_domain"])
        except KeyError as exc:
            raise InvalidInput(f"built-in CA state lacks {exc.args[0]!r}") from None

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    def state(self) -> ProviderState:
        """Everything needed to rebuild this CA, private key included: store it protected, never send it."""
        return {
            "provider": self.kind,
            "trust_domain": self._trust_domain,
            "private_key_pem": tx.format_private_key_pem(self._key),
            "root_cert_pem": self._root_pem,
        }

    def active_root(self) -> CARoot:
        return self._active

    def sign_leaf(
        self, csr_pem: str, *, expected: SpiffeId, ttl_seconds: float, now: datetime,
        min_ttl_seconds: float = MIN_LEAF_TTL_SECONDS,
    ) -> SignedLeaf:
        return issue_leaf(
            csr_pem,
            expected=expected,
            signer_key=self._key,
            signer_cert=self._root,
            trust_domain=self._trust_domain,
            ttl_seconds=ttl_seconds,
            now=now,
            min_ttl_seconds=min_ttl_seconds,
        )

    def cross_sign(
        self, new_root_cert_pem: str, new_key_public: tx.PublicKey | None = None, *, now: datetime
    ) -> tuple[str, ...]:
        """The new root re-issued by this root; a peer trusting only this root accepts the new one's leaves."""
        cert = cross_sign_root(new_root_cert_pem, new_key_public, signer_key=self._key, signer_cert=self._root, now=now)
        return (tx.format_cert_pem(cert),)

    def __repr__(self) -> str:  # never show the key
        return f"BuiltinCA(trust_domain={self._trust_domain!r}, root_id={self._active.id!r})"


def make_root_cert(key: tx.PrivateKey, trust_domain: str, now: datetime) -> x509.Certificate:
    """A self-signed SPIFFE signing root for `trust_domain`, valid 10 years from `now`."""
    td = validate_trust_domain(trust_domain)
    tx.key_info(key, field="PrivateKey")
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    spiffe_uri = format_spiffe_id(signing_id(td))
    # DNS only, as Consul: the trust domain and its subdomains. A URI subtree would make
    # `cryptography.x509.verification` refuse every leaf ("unsupported name constraint").
    permitted: list[x509.GeneralName] = [x509.DNSName(td)]
    # No dots in the CN: OpenSSL treats a dotted CN as a host name for name constraints.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Tether CA {ski.digest[:4].hex()}")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(new_root_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(seconds=ROOT_TTL_SECONDS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_uri)]), critical=False)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
        .sign(key, tx.signature_hash(key))
    )


def _check_root(root: x509.Certificate, key: Any, trust_domain: str) -> None:
    """Collect every reason `root` cannot serve as this CA's root, then fail once."""
    problems: list[str] = []
    try:
        tx.key_info(key, field="PrivateKey")
    except InvalidInput as exc:
        problems.append(exc.message)
    if root.public_key() != key.public_key():
        problems.append("PrivateKey does not match the public key of RootCert")
    if root.subject != root.issuer:
        problems.append("RootCert is not self-signed (issuer differs from subject)")
    try:
        constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            problems.append("RootCert is not a CA (basicConstraints CA:FALSE)")
    except x509.ExtensionNotFound:
        problems.append("RootCert is not a CA (no basicConstraints)")
    spiffe = tx.cert_spiffe_id(root)
    if spiffe is None or spiffe.kind is not SpiffeKind.SIGNING or spiffe.trust_domain != trust_domain:
        # Consul requires the same of a custom root: its URI SAN names the trust domain.
        problems.append(f"RootCert must carry the URI SAN spiffe://{trust_domain}")
    if problems:
        raise InvalidInput("built-in CA root refused: " + "; ".join(problems))
