"""Throwaway certificate authority for tests and benchmarks (never for production keys).

Issues EC P-256 roots and leaves carrying SPIFFE URI SANs, plus the broken variants the
proxy must refuse: expired and not-yet-valid leaves, leaves from a foreign trust domain
(a second `ThrowawayCA`), and cross-signed roots for rotation tests. The real CA lives in
`tether.ca`; this module only exists so tests and `bench/` get realistic certificates
without touching it.

    ca = ThrowawayCA("example.mesh")
    web = ca.issue("web")                 # Leaf(cert_pem, key_pem, spiffe_id, ...)
    old = ca.issue("web", expired=True)
    paths = web.write(tmpdir, "web")      # cert/key/bundle files, keys written 0600
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Leaves live 3 days by default, like the mesh's real 72 h leaves.
DEFAULT_LEAF_TTL = dt.timedelta(days=3)
#: Roots are backdated an hour so clock skew between test processes never matters.
BACKDATE = dt.timedelta(hours=1)


def spiffe_service_id(trust_domain: str, service: str, ns: str = "default", dc: str = "dc1") -> str:
    """The SPIFFE ID Tether gives a service: spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>."""
    return f"spiffe://{trust_domain}/ns/{ns}/dc/{dc}/svc/{service}"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _write_private(path: Path, data: str) -> None:
    # Created 0600 from the start (no window where the key is world-readable).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf certificate and its key, as PEM text."""

    cert_pem: str
    key_pem: str
    spiffe_id: str | None
    #: Certificates to send after the leaf (intermediates / cross-signed roots).
    chain_pem: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the key
        return f"Leaf(spiffe_id={self.spiffe_id!r})"

    @property
    def bundle_pem(self) -> str:
        """Leaf + chain + key in one PEM (the format HAProxy's `crt` wants)."""
        return self.cert_pem + "".join(self.chain_pem) + self.key_pem

    def write(self, directory: str | os.PathLike, name: str) -> dict[str, Path]:
        """Write `<name>.crt` (leaf + chain), `<name>.key` and `<name>.pem` (bundle); keys 0600."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"cert": d / f"{name}.crt", "key": d / f"{name}.key", "bundle": d / f"{name}.pem"}
        paths["cert"].write_text(self.cert_pem + "".join(self.chain_pem))
        _write_private(paths["key"], self.key_pem)
        _write_private(paths["bundle"], self.bundle_pem)
        return paths


class ThrowawayCA:
    """A self-signed root for one trust domain; issues leaves with SPIFFE URI SANs."""

    def __init__(self, trust_domain: str = "example.mesh", *, name: str | None = None,
                 now: dt.datetime | None = None, ttl: dt.timedelta = dt.timedelta(days=30)) -> None:
        self.trust_domain = trust_domain
        self._now = now or dt.datetime.now(dt.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or f"Throwaway CA {trust_domain}")])
        builder = self._root_builder(self.name, self.key.public_key(), self._now, ttl)
        self.cert = builder.issuer_name(self.name).sign(self.key, hashes.SHA256())
        self.root_pem = _pem_cert(self.cert)

    @staticmethod
    def _root_builder(name: x509.Name, public_key, now: dt.datetime, ttl: dt.timedelta) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(name).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    def spiffe_id(self, service: str, ns: str = "default", dc: str = "dc1") -> str:
        return spiffe_service_id(self.trust_domain, service, ns, dc)

    def issue(self, service: str | None = None, *, uri: str | None = None, dns: tuple[str, ...] = (),
              expired: bool = False, not_yet_valid: bool = False,
              ttl: dt.timedelta = DEFAULT_LEAF_TTL, chain_pem: tuple[str, ...] = ()) -> Leaf:
        """Issue a leaf for `service` (URI SAN = its SPIFFE ID) or for an explicit `uri`.

        With neither, the leaf has no URI SAN (a client the proxy cannot identify).
        `expired` / `not_yet_valid` shift the validity window into the past / future.
        """
        spiffe = uri if uri is not None else (self.spiffe_id(service) if service else None)
        now = self._now
        if expired:
            start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
        elif not_yet_valid:
            start, end = now + dt.timedelta(days=1), now + dt.timedelta(days=10)
        else:
            start, end = now - BACKDATE, now + ttl
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        if spiffe:
            sans.append(x509.UniformResourceIdentifier(spiffe))
        sans.extend(x509.DNSName(d) for d in dns)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service or "anonymous")]))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Leaf(_pem_cert(cert), _pem_key(key), spiffe, tuple(chain_pem))

    def cross_sign(self, other: ThrowawayCA) -> str:
        """`other`'s root public key and name, signed by this CA: lets leaves of `other`
        verify against this root when sent along as an intermediate (root rotation)."""
        cert = self._root_builder(other.name, other.key.public_key(), self._now, dt.timedelta(days=30))
        return _pem_cert(cert.issuer_name(self.name).sign(self.key, hashes.SHA256()))
