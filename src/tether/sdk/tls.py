"""TLS contexts from mesh material held in memory (leaf chain, key, roots).

OpenSSL loads a certificate chain only from files, so the key is written to a file in a
fresh 0700 directory with mode 0600, loaded, and removed at once; it never outlives the
call. Roots load from memory. Peers are verified against the mesh roots, and their
identity is the SPIFFE ID in the URI SAN (host names play no part in the mesh).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Material:
    """What a workload needs for mesh TLS; replaced as a whole when anything changes."""

    cert_chain_pem: str  # the leaf, then any intermediates (e.g. a cross-signed root)
    private_key_pem: str
    roots_pem: str
    spiffe_id: str
    trust_domain: str
    valid_before: str = ""


def _load_chain(ctx: ssl.SSLContext, material: Material) -> None:
    with tempfile.TemporaryDirectory(prefix="tether-tls-") as private_dir:  # created 0700
        cert_path = os.path.join(private_dir, "cert.pem")
        key_path = os.path.join(private_dir, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key_file:
            key_file.write(material.private_key_pem)
        with open(cert_path, "w") as cert_file:
            cert_file.write(material.cert_chain_pem)
        ctx.load_cert_chain(cert_path, key_path)


def _base(purpose: ssl.Purpose, material: Material) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose, cadata=material.roots_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # identity is the SPIFFE URI SAN, checked by the caller
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, material)
    return ctx


def client_context(material: Material) -> ssl.SSLContext:
    return _base(ssl.Purpose.SERVER_AUTH, material)


def server_context(material: Material) -> ssl.SSLContext:
    """Requires a client certificate that chains to the mesh roots."""
    return _base(ssl.Purpose.CLIENT_AUTH, material)


def peer_spiffe_id(peer: Any) -> str | None:
    """The SPIFFE ID of a verified peer: from an SSLSocket/SSLObject or a getpeercert() dict."""
    cert = peer.getpeercert() if hasattr(peer, "getpeercert") else peer
    if not cert:
        return None
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    return uris[0] if len(uris) == 1 else None


def peer_serial(peer: Any) -> str:
    cert = peer.getpeercert() if hasattr(peer, "getpeercert") else peer
    serial = (cert or {}).get("serialNumber", "")
    return ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)).lower()
