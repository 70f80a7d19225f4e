"""OpenSSL accepts Tether's chains: plain, after rotation (cross-signed), external, name-constrained.

(Four verifiers side by side, OpenSSL among them: test_verifier_matrix.py.)

Every case is a real mutual-TLS handshake through Python's ssl module (OpenSSL's own
verifier); a negative control beside each positive case shows the test can fail.
"""

from __future__ import annotations

import datetime as dt

import pytest
from ca_testkit import NOW, Identity, issue, make_ca_cert
from cryptography import x509
from cryptography.x509.oid import NameOID

from tether.ca import x509 as tx
from tether.ca.builtin import BuiltinCA
from tether.ca.external import ExternalCA
from tether.ca.rotation import plan_rotation
from tether.core.chain import match_chain
from tether.core.errors import InvalidInput
from tether.core.spiffe import match_trust_domain, parse_spiffe_id, signing_id


def test_leaves_of_one_root_verify_each_other(builtin, web_id, db_id, tls_handshake):
    roots = [builtin.active_root().root_cert_pem]
    web, db = issue(builtin, web_id), issue(builtin, db_id)
    assert tls_handshake(web, roots, db, roots) is None


def test_leaf_from_another_ca_is_refused(builtin, trust_domain, web_id, db_id, tls_handshake):
    stranger = BuiltinCA.generate(trust_domain, NOW)
    roots = [builtin.active_root().root_cert_pem]
    error = tls_handshake(issue(stranger, web_id), roots, issue(builtin, db_id), roots)
    assert error is not None and "certificate verify failed" in error


def _rotate(builtin, trust_domain):
    new = BuiltinCA.generate(trust_domain, NOW)
    roots = plan_rotation([builtin.active_root()], builtin, new, now=NOW)
    old_root, new_root = roots
    assert not old_root.active and new_root.active and len(new_root.intermediate_certs) == 1
    return new, old_root, new_root


def test_after_rotation_old_and_new_leaves_verify_each_other(builtin, trust_domain, web_id, db_id, tls_handshake):
    new, old_root, new_root = _rotate(builtin, trust_domain)
    # web has not heard of the rotation: old leaf, trusts only the old root.
    web = issue(builtin, web_id)
    web_trusts = [old_root.root_cert_pem]
    # db renewed after the rotation: new leaf sent with the cross-signed cert, trusts both roots.
    db = issue(new, db_id, intermediates=new_root.intermediate_certs)
    db_trusts = [old_root.root_cert_pem, new_root.root_cert_pem]
    assert tls_handshake(web, web_trusts, db, db_trusts) is None
    assert tls_handshake(db, db_trusts, web, web_trusts) is None


def test_new_leaf_without_cross_signed_cert_fails_for_old_only_peer(builtin, trust_domain, web_id, db_id, tls_handshake):
    new, old_root, _ = _rotate(builtin, trust_domain)
    bare = issue(new, db_id)  # intermediates deliberately left off
    error = tls_handshake(issue(builtin, web_id), [old_root.root_cert_pem], bare, [old_root.root_cert_pem])
    assert error is not None and "unable to get local issuer certificate" in error


def test_new_leaf_verifies_for_peer_trusting_only_the_new_root(builtin, trust_domain, web_id, db_id, tls_handshake):
    new, _, new_root = _rotate(builtin, trust_domain)
    trusts = [new_root.root_cert_pem]
    web = issue(new, web_id, intermediates=new_root.intermediate_certs)
    db = issue(new, db_id, intermediates=new_root.intermediate_certs)
    assert tls_handshake(web, trusts, db, trusts) is None


def test_rotation_by_supplied_private_key(builtin, trust_domain, web_id, db_id, tls_handshake):
    key_pem = tx.format_private_key_pem(tx.generate_private_key("rsa", 2048))
    new = BuiltinCA.from_private_key(key_pem, trust_domain, NOW)
    old_root, new_root = plan_rotation([builtin.active_root()], builtin, new, now=NOW)
    assert new_root.private_key_type == "rsa" and new_root.private_key_bits == 2048
    db = issue(new, db_id, intermediates=new_root.intermediate_certs)
    assert tls_handshake(issue(builtin, web_id), [old_root.root_cert_pem], db, [old_root.root_cert_pem]) is None


def _forge_leaf(ca: BuiltinCA, uri: str, cn: str = "web", dns: str | None = None) -> tuple[x509.Certificate, object]:
    """A leaf signed by the root key with whatever names we like, bypassing the CSR checks."""
    root = tx.load_certificate_pem(ca.active_root().root_cert_pem)
    root_key = tx.load_private_key_pem(ca.state()["private_key_pem"])
    key = tx.generate_private_key()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    if dns is not None:
        sans.append(x509.DNSName(dns))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(root_key, tx.signature_hash(root_key))
    )
    return cert, key


@pytest.mark.parametrize(
    "cn, dns",
    [
        ("web.example.com", None),  # a host-like CN outside the trust domain (OpenSSL checks it as DNS)
        ("web", "web.example.com"),  # a DNS SAN outside the trust domain
    ],
)
def test_dns_name_constraint_enforced_by_openssl_and_match_chain(builtin, web_id, db_id, tls_handshake, cn, dns):
    cert, key = _forge_leaf(builtin, web_id.uri, cn, dns)
    forged = Identity(tx.format_cert_pem(cert), tx.format_private_key_pem(key))
    roots = [builtin.active_root().root_cert_pem]
    error = tls_handshake(forged, roots, issue(builtin, db_id), roots)
    assert error is not None and "permitted subtree violation" in error
    with pytest.raises(InvalidInput, match="name constraints"):
        match_chain(cert, [], [tx.load_certificate_pem(roots[0])], now=NOW)


def test_root_constrains_no_uris_so_the_trust_domain_is_checked_by_the_mesh(builtin, db_id, tls_handshake):
    """The root has no URI subtree (cryptography's verifier refuses those): a leaf its key signs
    for another trust domain passes chain verification, and only the SPIFFE ID checks keep it
    out (docs/identity.md, "Name constraints and verifiers": the proxy's exact-ID check, the
    trust-domain match)."""
    uri = "spiffe://other.tether/ns/default/dc/dc1/svc/web"
    cert, key = _forge_leaf(builtin, uri)
    forged = Identity(tx.format_cert_pem(cert), tx.format_private_key_pem(key))
    roots = [builtin.active_root().root_cert_pem]
    assert tls_handshake(forged, roots, issue(builtin, db_id), roots) is None
    assert len(match_chain(cert, [], [tx.load_certificate_pem(roots[0])], now=NOW)) == 2
    assert not match_trust_domain(signing_id(builtin.trust_domain), parse_spiffe_id(uri))


def test_external_ca_leaves_verify_through_the_intermediate(external_pki, trust_domain, web_id, db_id, tls_handshake):
    ext = ExternalCA.from_pem(
        root_cert_pem=external_pki.root_pem,
        intermediate_cert_pem=external_pki.intermediate_pem,
        intermediate_key_pem=external_pki.intermediate_key_pem,
        trust_domain=trust_domain,
        now=NOW,
    )
    root = ext.active_root()
    trusts = [root.root_cert_pem]
    web = issue(ext, web_id, intermediates=root.intermediate_certs)
    db = issue(ext, db_id, intermediates=root.intermediate_certs)
    assert tls_handshake(web, trusts, db, trusts) is None
    assert tls_handshake(issue(ext, web_id), trusts, db, trusts) is not None  # no intermediate: refused


def test_rotation_builtin_to_external_and_back(builtin, external_pki, trust_domain, web_id, db_id, tls_handshake):
    ext = ExternalCA.from_pem(
        root_cert_pem=external_pki.root_pem,
        intermediate_cert_pem=external_pki.intermediate_pem,
        intermediate_key_pem=external_pki.intermediate_key_pem,
        trust_domain=trust_domain,
        now=NOW,
    )
    first = [builtin.active_root()]
    old_root, ext_root = plan_rotation(first, builtin, ext, now=NOW)
    ext_leaf = issue(ext, db_id, intermediates=ext_root.intermediate_certs)
    assert tls_handshake(issue(builtin, web_id), [old_root.root_cert_pem], ext_leaf, [old_root.root_cert_pem]) is None

    # And away again: the external intermediate (pathLen 1) cross-signs a new built-in root.
    back = BuiltinCA.generate(trust_domain, NOW)
    roots = plan_rotation([old_root, ext_root], ext, back, now=NOW)
    back_root = roots[-1]
    back_leaf = issue(back, web_id, intermediates=back_root.intermediate_certs)
    ext_trust = [ext_root.root_cert_pem]
    assert tls_handshake(back_leaf, ext_trust, ext_leaf, ext_trust) is None


def test_rotation_refused_when_path_length_leaves_no_room(external_pki, trust_domain, web_id, db_id, tls_handshake):
    """Old CA's intermediate has pathLen 1; the new external CA brings its own intermediate,
    so new leaves would need two CAs below it. OpenSSL refuses such leaves, and so does
    plan_rotation, before any peer sees the new root."""
    old = ExternalCA.from_pem(
        root_cert_pem=external_pki.root_pem, intermediate_cert_pem=external_pki.intermediate_pem,
        intermediate_key_pem=external_pki.intermediate_key_pem, trust_domain=trust_domain, now=NOW,
    )
    root2_key, int2_key = tx.generate_private_key(), tx.generate_private_key()
    root2 = make_ca_cert("Second Root", root2_key)
    int2 = make_ca_cert("Second Intermediate", int2_key, issuer_cert=root2, issuer_key=root2_key)
    new = ExternalCA.from_pem(
        root_cert_pem=tx.format_cert_pem(root2), intermediate_cert_pem=tx.format_cert_pem(int2),
        intermediate_key_pem=tx.format_private_key_pem(int2_key), trust_domain=trust_domain, now=NOW,
    )
    with pytest.raises(InvalidInput, match="would refuse new leaves.*allows 1 intermediate"):
        plan_rotation([old.active_root()], old, new, now=NOW)
    # OpenSSL agrees: the same chain, assembled by hand, fails verification.
    cross = old.cross_sign(new.active_root().root_cert_pem, now=NOW)
    leaf = issue(new, db_id, intermediates=(*new.active_root().intermediate_certs, *cross))
    trusts = [old.active_root().root_cert_pem]
    web = issue(old, web_id, intermediates=old.active_root().intermediate_certs)
    error = tls_handshake(web, trusts, leaf, trusts)
    assert error is not None and "path length constraint exceeded" in error
