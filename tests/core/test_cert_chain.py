"""Chain building: the path when there is one, and a reason naming the culprit when not."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.core.chain import match_chain, match_name_permitted
from tether.core.errors import InvalidInput

UTC = dt.timezone.utc
NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)
TD = "abc.tether"


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(cn, key, issuer=None, issuer_key=None, *, ca=True, path_length=None, days=(-1, 30), uri=None, nc=None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    )
    if uri:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
    if nc is not None:
        builder = builder.add_extension(nc, critical=True)
    return builder.sign(issuer_key or key, hashes.SHA256())


LEAF_URI = f"spiffe://{TD}/ns/default/dc/dc1/svc/web"


@pytest.fixture(scope="module")
def pki():
    root_key, int_key, leaf_key = _key(), _key(), _key()
    root = _cert("Root", root_key)
    inter = _cert("Intermediate", int_key, root, root_key)
    leaf = _cert("web", leaf_key, inter, int_key, ca=False, uri=LEAF_URI)
    return {"root": root, "root_key": root_key, "inter": inter, "int_key": int_key, "leaf": leaf, "leaf_key": leaf_key}


def test_direct_and_intermediate_paths(pki):
    assert match_chain(pki["leaf"], [pki["inter"]], [pki["root"]], now=NOW) == (pki["leaf"], pki["inter"], pki["root"])
    direct = _cert("web", pki["leaf_key"], pki["root"], pki["root_key"], ca=False, uri=LEAF_URI)
    assert match_chain(direct, [], [pki["root"]], now=NOW) == (direct, pki["root"])


def test_chooses_the_root_whose_key_signed(pki):
    impostor = _cert("Root", _key())  # same name, different key
    path = match_chain(pki["leaf"], [pki["inter"]], [impostor, pki["root"]], now=NOW)
    assert path[-1] == pki["root"]


def test_missing_intermediate(pki):
    with pytest.raises(InvalidInput, match="issuer 'CN=Intermediate' .* is not among the 0 intermediate"):
        match_chain(pki["leaf"], [], [pki["root"]], now=NOW)


def test_wrong_key(pki):
    impostor = _cert("Root", _key())
    with pytest.raises(InvalidInput, match="does not verify with the key of 'CN=Root'"):
        match_chain(pki["leaf"], [pki["inter"]], [impostor], now=NOW)


def test_expired_leaf_and_not_yet_valid_leaf(pki):
    with pytest.raises(InvalidInput, match=r"leaf 'CN=web' \(spiffe://.*\): expired at"):
        match_chain(pki["leaf"], [pki["inter"]], [pki["root"]], now=NOW + dt.timedelta(days=31))
    with pytest.raises(InvalidInput, match="not valid before"):
        match_chain(pki["leaf"], [pki["inter"]], [pki["root"]], now=NOW - dt.timedelta(days=2))


def test_expired_intermediate(pki):
    old = _cert("Intermediate", pki["int_key"], pki["root"], pki["root_key"], days=(-10, -5))
    with pytest.raises(InvalidInput, match="'CN=Intermediate': expired at"):
        match_chain(pki["leaf"], [old], [pki["root"]], now=NOW)
    # ... and with the current one beside it, the good path is found.
    assert match_chain(pki["leaf"], [old, pki["inter"]], [pki["root"]], now=NOW)[1] == pki["inter"]


def test_issuer_that_is_not_a_ca(pki):
    not_ca = _cert("Intermediate", pki["int_key"], pki["root"], pki["root_key"], ca=False)
    with pytest.raises(InvalidInput, match="is not a CA"):
        match_chain(pki["leaf"], [not_ca], [pki["root"]], now=NOW)


def test_path_length(pki):
    root_key = _key()
    root = _cert("Root", root_key, path_length=0)
    inter = _cert("Intermediate", pki["int_key"], root, root_key)
    with pytest.raises(InvalidInput, match="allows 0 intermediate"):
        match_chain(pki["leaf"], [inter], [root], now=NOW)


def test_no_roots(pki):
    with pytest.raises(InvalidInput, match="no trusted roots"):
        match_chain(pki["leaf"], [pki["inter"]], [], now=NOW)


def _constrained_root(*permitted):
    key = _key()
    nc = x509.NameConstraints(permitted_subtrees=list(permitted), excluded_subtrees=None)
    return key, _cert("NC Root", key, nc=nc)


@pytest.mark.parametrize(
    "uri, ok",
    [
        (LEAF_URI, True),
        (f"spiffe://{TD.upper()}/ns/default/dc/dc1/svc/web", True),
        ("spiffe://other.tether/ns/default/dc/dc1/svc/web", False),
        (f"spiffe://sub.{TD}/ns/default/dc/dc1/svc/web", False),  # a URI constraint is exact unless it starts with '.'
    ],
)
def test_uri_name_constraints(uri, ok):
    key, root = _constrained_root(x509.UniformResourceIdentifier(TD), x509.DNSName(TD))
    leaf = _cert("web", _key(), root, key, ca=False, uri=uri)
    if ok:
        assert match_chain(leaf, [], [root], now=NOW) == (leaf, root)
    else:
        with pytest.raises(InvalidInput, match="violates the name constraints of 'CN=NC Root'"):
            match_chain(leaf, [], [root], now=NOW)


def test_name_constraints_reach_through_intermediates():
    key, root = _constrained_root(x509.UniformResourceIdentifier(TD))
    int_key = _key()
    inter = _cert("Intermediate", int_key, root, key)
    leaf = _cert("web", _key(), inter, int_key, ca=False, uri="spiffe://evil.tether/ns/default/dc/dc1/svc/web")
    with pytest.raises(InvalidInput, match="name constraints"):
        match_chain(leaf, [inter], [root], now=NOW)


def test_hostname_like_cn_is_checked_against_dns_constraints():
    key, root = _constrained_root(x509.UniformResourceIdentifier(TD), x509.DNSName(TD))
    ok = _cert(f"web.{TD}", _key(), root, key, ca=False, uri=LEAF_URI)
    bad = _cert("web.example.com", _key(), root, key, ca=False, uri=LEAF_URI)
    assert match_chain(ok, [], [root], now=NOW)
    with pytest.raises(InvalidInput, match="DNS name 'web.example.com'"):
        match_chain(bad, [], [root], now=NOW)


@pytest.mark.parametrize(
    "kind, name, constraint, ok",
    [
        ("URI", "spiffe://a.b/x", ".b", True),
        ("URI", "spiffe://b/x", ".b", False),
        ("URI", "urn:no-host", "b", False),
        ("DNS", "x.a.b", "a.b", True),
        ("DNS", "a.b", "a.b", True),
        ("DNS", "xa.b", "a.b", False),
        ("DNS", "a.b", ".a.b", False),
        ("DNS", "x.a.b", ".a.b", True),
    ],
)
def test_match_name_permitted(kind, name, constraint, ok):
    gtype = x509.UniformResourceIdentifier if kind == "URI" else x509.DNSName
    nc = x509.NameConstraints(permitted_subtrees=[gtype(constraint)], excluded_subtrees=None)
    assert match_name_permitted(nc, kind, name) is ok


def test_excluded_subtrees():
    nc = x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=[x509.UniformResourceIdentifier("bad.tether")])
    assert not match_name_permitted(nc, "URI", "spiffe://bad.tether/ns/default/dc/dc1/svc/web")
    assert match_name_permitted(nc, "URI", LEAF_URI)
