"""Built-in CA: root shape, Consul JSON, leaf signing, state round trip, refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from ca_testkit import NOW, issue
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tether.ca import x509 as tx
from tether.ca.builtin import BuiltinCA
from tether.ca.provider import CAProvider, provider_from_state
from tether.core.errors import InvalidInput, PermissionDenied
from tether.core.spiffe import service_id, signing_id


def test_root_is_a_name_constrained_spiffe_signing_cert(builtin, trust_domain):
    root = tx.load_certificate_pem(builtin.active_root().root_cert_pem)
    assert tx.cert_spiffe_id(root) == signing_id(trust_domain)
    constraints = root.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    # DNS only: a URI subtree makes cryptography's verifier refuse every leaf (test_verifier_matrix.py).
    assert list(constraints.value.permitted_subtrees) == [x509.DNSName(trust_domain)]
    assert constraints.value.excluded_subtrees is None
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey) and root.public_key().curve.name == "secp256r1"
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert dt.timedelta(days=3650) <= lifetime <= dt.timedelta(days=3651)


def test_consul_root_json(builtin, trust_domain):
    entry = builtin.active_root()
    body = entry.to_consul_json(create_index=3, modify_index=4)
    cert = tx.load_certificate_pem(entry.root_cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA1())
    digest.update(der)
    assert body["ID"] == ":".join(f"{b:02x}" for b in digest.finalize())
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert body["SigningKeyID"] == ":".join(f"{b:02x}" for b in ski)
    assert body["SerialNumber"] == cert.serial_number and isinstance(body["SerialNumber"], int)
    assert body["Name"] == "Tether CA Primary Cert"
    assert body["ExternalTrustDomain"] == trust_domain.split(".")[0]
    assert body["RootCert"].startswith("-----BEGIN CERTIFICATE-----") and body["RootCert"].endswith("\n")
    assert body["IntermediateCerts"] is None
    assert body["Active"] is True and body["PrivateKeyType"] == "ec" and body["PrivateKeyBits"] == 256
    assert body["NotBefore"].endswith("Z") and body["NotAfter"].endswith("Z")
    assert (body["CreateIndex"], body["ModifyIndex"]) == (3, 4)
    assert set(body) == {
        "ID", "Name", "SerialNumber", "SigningKeyID", "ExternalTrustDomain", "NotBefore", "NotAfter",
        "RootCert", "IntermediateCerts", "Active", "PrivateKeyType", "PrivateKeyBits", "CreateIndex", "ModifyIndex",
    }


def test_signed_leaf_fields_and_consul_json(builtin, web_id):
    key = tx.generate_private_key()
    leaf = builtin.sign_leaf(tx.make_leaf_csr(web_id, key), expected=web_id, ttl_seconds=72 * 3600, now=NOW)
    cert = tx.load_certificate_pem(leaf.cert_pem)
    assert tx.cert_spiffe_id(cert) == web_id
    assert leaf.service == "web" and leaf.service_uri == web_id.uri
    assert leaf.serial_number == tx.serial_colon_hex(cert.serial_number)
    assert leaf.valid_before == NOW + dt.timedelta(hours=72)
    assert leaf.valid_after == NOW - dt.timedelta(minutes=1)  # backdated for clock skew
    assert cert.public_key() == key.public_key()  # the agent's key, not one the server made
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    body = leaf.to_consul_json("KEY-PEM", ["-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----"])
    assert set(body) == {
        "SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter", "ValidBefore",
        "CreateIndex", "ModifyIndex",
    }
    assert body["CertPEM"].startswith(leaf.cert_pem) and body["CertPEM"].endswith("-----END CERTIFICATE-----\n")
    assert body["ServiceURI"] == web_id.uri and body["ValidBefore"].endswith("Z")


def test_leaf_never_outlives_its_signer(trust_domain, web_id):
    ca = BuiltinCA.generate(trust_domain, NOW - dt.timedelta(days=3650) + dt.timedelta(hours=1))
    leaf = issue(ca, web_id, ttl=72 * 3600)
    cert = tx.load_certificate_pem(leaf.chain_pem)
    root = tx.load_certificate_pem(ca.active_root().root_cert_pem)
    assert cert.not_valid_after_utc == root.not_valid_after_utc


def test_state_round_trip_keeps_the_same_root(builtin, web_id):
    again = provider_from_state(builtin.state())
    assert isinstance(again, BuiltinCA) and isinstance(again, CAProvider)
    assert again.active_root() == builtin.active_root()
    issue(again, web_id)  # and it still signs
    assert "PRIVATE KEY" not in repr(again)


def test_rsa_ca_keys(trust_domain, web_id):
    ca = BuiltinCA.generate(trust_domain, NOW, key_type="rsa", bits=2048)
    assert (ca.active_root().private_key_type, ca.active_root().private_key_bits) == ("rsa", 2048)
    issue(ca, web_id)


# --- refusals: each raises a clear error and changes nothing -----------------------------


def _csr(spiffe, key=None) -> str:
    return tx.make_leaf_csr(spiffe, key or tx.generate_private_key())


@pytest.mark.parametrize(
    "make_csr, error, message",
    [
        (lambda td: _csr(service_id("other.tether", "dc1", "web")), PermissionDenied, "trust domain 'other.tether'"),
        (lambda td: _csr(service_id(td, "dc1", "db")), PermissionDenied, "may only get"),
        (lambda td: _csr(service_id(td, "dc2", "web")), PermissionDenied, "may only get"),
        (lambda td: "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n", InvalidInput, "malformed"),
        (lambda td: "hello", InvalidInput, "no PEM data"),
        (lambda td: _csr(service_id(td, "dc1", "web"), ec.generate_private_key(ec.SECP384R1())), InvalidInput, "P-256"),
        (lambda td: _csr(service_id(td, "dc1", "web"), rsa.generate_private_key(65537, 1024)), InvalidInput, "too small"),
    ],
    ids=["other-trust-domain", "other-service", "other-dc", "malformed-pem", "not-pem", "ec-p384", "rsa-1024"],
)
def test_sign_leaf_refusals(builtin, trust_domain, web_id, make_csr, error, message):
    before = builtin.state()
    with pytest.raises(error, match=message):
        builtin.sign_leaf(make_csr(trust_domain), expected=web_id, ttl_seconds=3600, now=NOW)
    assert builtin.state() == before


def test_csr_with_tampered_signature_is_refused(builtin, web_id):
    csr = x509.load_pem_x509_csr(_csr(web_id).encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # flip a bit inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(InvalidInput, match="signature"):
        builtin.sign_leaf(tampered, expected=web_id, ttl_seconds=3600, now=NOW)


def test_csr_with_two_sans_is_refused(builtin, web_id):
    key = tx.generate_private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(web_id.uri), x509.DNSName("web.example.com")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    ).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(InvalidInput, match="exactly one SAN"):
        builtin.sign_leaf(csr, expected=web_id, ttl_seconds=3600, now=NOW)


@pytest.mark.parametrize("ttl", [59, 0, -1, 365 * 24 * 3600 + 1, float("nan")])
def test_ttl_out_of_range_is_refused(builtin, web_id, ttl):
    with pytest.raises(InvalidInput, match="LeafCertTTL"):
        builtin.sign_leaf(_csr(web_id), expected=web_id, ttl_seconds=ttl, now=NOW)


@pytest.mark.parametrize("ttl", [60, 365 * 24 * 3600])
def test_ttl_bounds_are_inclusive(builtin, web_id, ttl):
    leaf = builtin.sign_leaf(_csr(web_id), expected=web_id, ttl_seconds=ttl, now=NOW)
    assert leaf.valid_before == NOW + dt.timedelta(seconds=ttl)  # signed, for exactly the TTL asked
    assert tx.load_certificate_pem(leaf.cert_pem).not_valid_after_utc == leaf.valid_before


def test_signing_after_root_expiry_is_refused(builtin, web_id):
    with pytest.raises(InvalidInput, match="expired"):
        builtin.sign_leaf(_csr(web_id), expected=web_id, ttl_seconds=3600, now=NOW + dt.timedelta(days=3700))


@pytest.mark.parametrize(
    "pem, message",
    [
        ("", "no PEM data"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a valid PEM private key"),
    ],
)
def test_malformed_private_key_is_refused(trust_domain, pem, message):
    with pytest.raises(InvalidInput, match=message):
        BuiltinCA.from_private_key(pem, trust_domain, NOW)


@pytest.mark.parametrize(
    "key, message",
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "P-256"),
        (lambda: rsa.generate_private_key(65537, 1024), "at least 2048"),
    ],
)
def test_disallowed_ca_key_is_refused(trust_domain, key, message):
    with pytest.raises(InvalidInput, match=message):
        BuiltinCA.from_private_key(tx.format_private_key_pem(key()), trust_domain, NOW)


def test_encrypted_private_key_is_refused(trust_domain):
    pem = tx.generate_private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    ).decode()
    with pytest.raises(InvalidInput, match="encrypted"):
        BuiltinCA.from_private_key(pem, trust_domain, NOW)


def test_unsupported_generated_key_is_refused(trust_domain):
    with pytest.raises(InvalidInput, match="not supported"):
        BuiltinCA.generate(trust_domain, NOW, key_type="ec", bits=384)


def test_custom_root_must_match_key_and_trust_domain(builtin, trust_domain):
    other = BuiltinCA.generate("other.tether", NOW)
    state = builtin.state()
    with pytest.raises(InvalidInput) as info:
        BuiltinCA.from_root(other.state()["private_key_pem"], state["root_cert_pem"], "other.tether")
    assert "does not match" in info.value.message and "spiffe://other.tether" in info.value.message


def test_unknown_provider_state_is_refused():
    with pytest.raises(InvalidInput, match="unknown provider"):
        provider_from_state({"provider": "vault"})
