"""The URI SAN reader agrees with `cryptography` and raises only ValueError on noise."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.proxy.der import parse_uri_sans, uri_sans_cached

KEY = ec.generate_private_key(ec.SECP256R1())
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

uris = st.lists(st.from_regex(r"\Aspiffe://[a-z0-9.-]{1,20}(/[A-Za-z0-9._~-]{1,30}){0,6}\Z"), max_size=4)
dnss = st.lists(st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}\Z"), max_size=3)


def cert_der(uri_list, dns_list, critical=False, extra=True) -> bytes:
    b = (x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME).public_key(KEY.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1)))
    if extra:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(KEY.public_key()), critical=False)
    names = [x509.UniformResourceIdentifier(u) for u in uri_list] + [x509.DNSName(d) for d in dns_list]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=critical)
    return b.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@settings(max_examples=60, deadline=None)
@given(uris, dnss, st.booleans(), st.booleans())
def test_agrees_with_cryptography(uri_list, dns_list, critical, extra):
    der = cert_der(uri_list, dns_list, critical, extra)
    cert = x509.load_der_x509_certificate(der)
    try:
        expected = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        expected = []
    assert parse_uri_sans(der) == tuple(expected)
    assert uri_sans_cached(der) == tuple(expected)


def test_no_extensions_at_all():
    assert parse_uri_sans(cert_der([], [], extra=False)) == ()


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_noise_raises_only_value_error(data):
    try:
        assert isinstance(parse_uri_sans(data), tuple)
    except ValueError:
        pass


BASE = cert_der(["spiffe://example.mesh/ns/default/dc/dc1/svc/web"], ["web"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_or_corrupted_certificates(data):
    der = bytearray(BASE)
    if data.draw(st.booleans()):
        der = der[:data.draw(st.integers(0, len(der) - 1))]
    else:
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    try:
        parse_uri_sans(bytes(der))
    except ValueError:
        pass


def test_rejects_non_bytes():
    with pytest.raises(ValueError):
        parse_uri_sans("not bytes")  # type: ignore[arg-type]
