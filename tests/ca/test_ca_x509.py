"""x509 helpers: colon-hex, CSRs, PEM loading, inspect summaries."""

from __future__ import annotations

import pytest
from ca_testkit import issue

from tether.ca import x509 as tx
from tether.core.errors import InvalidInput
from tether.core.spiffe import signing_id


@pytest.mark.parametrize(
    "value, text",
    [(b"", ""), (b"\x04", "04"), (b"\x04\xa1\xff", "04:a1:ff")],
)
def test_colon_hex(value, text):
    assert tx.colon_hex(value) == text


@pytest.mark.parametrize("serial, text", [(0, "00"), (1, "01"), (0x0400, "04:00"), (2**64 - 1, ":".join(["ff"] * 8))])
def test_serial_colon_hex(serial, text):
    assert tx.serial_colon_hex(serial) == text


def test_csr_round_trip(web_id):
    key = tx.generate_private_key()
    csr, spiffe = tx.parse_csr(tx.make_leaf_csr(web_id, key))
    assert spiffe == web_id and csr.public_key() == key.public_key()


def test_csr_for_a_signing_id_is_refused(trust_domain):
    with pytest.raises(InvalidInput, match="service identities"):
        tx.make_leaf_csr(signing_id(trust_domain), tx.generate_private_key())


def test_certificate_bundles(builtin, web_id):
    bundle = issue(builtin, web_id, intermediates=[builtin.active_root().root_cert_pem]).chain_pem
    assert len(tx.load_certificates_pem(bundle)) == 2
    with pytest.raises(InvalidInput, match="expected one certificate, found 2"):
        tx.load_certificate_pem(bundle, field="RootCert")


def test_cert_summary_has_no_key_material(builtin, web_id):
    leaf = tx.load_certificate_pem(issue(builtin, web_id).chain_pem)
    summary = tx.cert_summary(leaf)
    assert summary["spiffe_id"] == web_id.uri
    assert summary["subject"] == "CN=web" and summary["issuer"].startswith("CN=Tether CA ")
    assert summary["key_type"] == "ec" and summary["key_bits"] == 256 and summary["is_ca"] is False
    assert summary["serial"] == tx.serial_colon_hex(leaf.serial_number)
    root_summary = tx.cert_summary(tx.load_certificate_pem(builtin.active_root().root_cert_pem))
    assert root_summary["is_ca"] and root_summary["id"] == builtin.active_root().id
    assert "PRIVATE" not in repr(summary)
