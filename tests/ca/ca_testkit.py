"""Helpers shared by the CA tests (certificate builders and the agent-side issue flow)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from tether.ca import x509 as tx
from tether.core.spiffe import SpiffeId

#: Real time, taken once: OpenSSL checks validity against the real clock, so certificates
#: used in handshakes must be valid now. Pure-math tests use fixed datetimes instead.
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
#: Handshakes need at most a handful of flights; the bound only guards against a hang.


@dataclass
class Identity:
    """A leaf as an agent holds it: the certificate chain to present and its private key."""

    chain_pem: str
    key_pem: str


def issue(ca, spiffe: SpiffeId, *, now: dt.datetime = NOW, ttl: float = 3600, intermediates: Sequence[str] = ()) -> Identity:
    """Agent-side flow: make a key, send a CSR, get it signed, bundle the intermediates."""
    key = tx.generate_private_key()
    leaf = ca.sign_leaf(tx.make_leaf_csr(spiffe, key), expected=spiffe, ttl_seconds=ttl, now=now)
    return Identity(leaf.bundle_pem(intermediates), tx.format_private_key_pem(key))


def make_ca_cert(
    subject: str,
    key,
    *,
    issuer_cert: x509.Certificate | None = None,
    issuer_key=None,
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
    path_length: int | None = None,
    is_ca: bool = True,
    name_constraints: x509.NameConstraints | None = None,
) -> x509.Certificate:
    """A CA certificate as an organisation's PKI would make it (self-signed when no issuer)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = issuer_cert.subject if issuer_cert is not None else name
    signer = issuer_key if issuer_key is not None else key
    issuer_public = issuer_cert.public_key() if issuer_cert is not None else key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    return builder.sign(signer, tx.signature_hash(signer))


@dataclass
class ExternalPki:
    root: x509.Certificate
    root_key: object
    intermediate: x509.Certificate
    intermediate_key: object

    @property
    def root_pem(self) -> str:
        return tx.format_cert_pem(self.root)

    @property
    def intermediate_pem(self) -> str:
        return tx.format_cert_pem(self.intermediate)

    @property
    def intermediate_key_pem(self) -> str:
        return tx.format_private_key_pem(self.intermediate_key)



def make_external_pki() -> ExternalPki:
    """An organisation's root (10 years) and a mesh intermediate below it (pathLen 1)."""
    root_key = tx.generate_private_key()
    root = make_ca_cert("Example Corp Root CA", root_key, not_after=NOW + dt.timedelta(days=3650))
    inter_key = tx.generate_private_key()
    inter = make_ca_cert("Example Corp Mesh Intermediate", inter_key, issuer_cert=root, issuer_key=root_key, path_length=1)
    return ExternalPki(root, root_key, inter, inter_key)
