"""External (PEM-file) CA: validation up front, every problem reported at once."""

from __future__ import annotations

import datetime as dt

import pytest
from ca_testkit import NOW, issue, make_ca_cert
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tether.ca import x509 as tx
from tether.ca.external import ExternalCA
from tether.ca.provider import provider_from_state
from tether.core.chain import match_chain
from tether.core.errors import InvalidInput


def _load(pki, td, **overrides):
    args = dict(
        root_cert_pem=pki.root_pem,
        intermediate_cert_pem=pki.intermediate_pem,
        intermediate_key_pem=pki.intermediate_key_pem,
        trust_domain=td,
        now=NOW,
    )
    args.update(overrides)
    return ExternalCA.from_pem(**args)


def test_leaf_chains_to_external_root(external_pki, trust_domain, web_id):
    ext = _load(external_pki, trust_domain)
    root = ext.active_root()
    assert root.root_cert_pem == external_pki.root_pem
    assert root.intermediate_certs == (external_pki.intermediate_pem,)
    assert root.name == "External CA Primary Cert"
    leaf = tx.load_certificate_pem(issue(ext, web_id).chain_pem)
    path = match_chain(leaf, [external_pki.intermediate], [external_pki.root], now=NOW)
    assert path == (leaf, external_pki.intermediate, external_pki.root)


def test_state_round_trip(external_pki, trust_domain, web_id):
    ext = _load(external_pki, trust_domain)
    again = provider_from_state(ext.state())
    assert isinstance(again, ExternalCA) and again.active_root() == ext.active_root()
    issue(again, web_id)


def test_expired_intermediate_is_refused(external_pki, trust_domain):
    old = make_ca_cert(
        "Old Intermediate", external_pki.intermediate_key, issuer_cert=external_pki.root,
        issuer_key=external_pki.root_key, not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1),
    )
    with pytest.raises(InvalidInput, match="IntermediateCert expired at"):
        _load(external_pki, trust_domain, intermediate_cert_pem=tx.format_cert_pem(old))


def test_expired_intermediate_in_state_loads_but_refuses_to_sign(external_pki, trust_domain, web_id):
    state = _load(external_pki, trust_domain).state()
    ext = ExternalCA.from_state(state)
    with pytest.raises(InvalidInput, match="expired"):
        issue(ext, web_id, now=NOW + dt.timedelta(days=400))


def test_every_problem_is_reported_at_once(external_pki, trust_domain):
    stranger_key = tx.generate_private_key()
    stranger_root = make_ca_cert("Stranger Root", stranger_key)
    not_ca = make_ca_cert(
        "Leafy", external_pki.intermediate_key, issuer_cert=stranger_root, issuer_key=stranger_key, is_ca=False,
        not_after=NOW - dt.timedelta(hours=1),
    )
    with pytest.raises(InvalidInput) as info:
        _load(
            external_pki, trust_domain,
            intermediate_cert_pem=tx.format_cert_pem(not_ca),
            intermediate_key_pem=tx.format_private_key_pem(tx.generate_private_key()),
        )
    message = info.value.message
    for part in ("not a CA", "expired", "does not match", "no valid path"):
        assert part in message, (part, message)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("root_cert_pem", "garbage", "RootCert: no PEM certificate"),
        ("intermediate_cert_pem", "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n", "IntermediateCert: malformed"),
        ("intermediate_key_pem", "nope", "IntermediateKey: no PEM data"),
        ("trust_domain", "Not A Domain!", "trust domain"),
    ],
)
def test_malformed_inputs_are_refused(external_pki, trust_domain, field, value, message):
    with pytest.raises(InvalidInput, match=message):
        _load(external_pki, trust_domain, **{field: value})


@pytest.mark.parametrize(
    "make_key, message",
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "P-256"),
        (lambda: rsa.generate_private_key(65537, 1024), "too small"),
    ],
)
def test_disallowed_intermediate_key_types_are_refused(external_pki, trust_domain, make_key, message):
    key = make_key()
    inter = make_ca_cert("Weak Intermediate", key, issuer_cert=external_pki.root, issuer_key=external_pki.root_key)
    with pytest.raises(InvalidInput, match=message):
        _load(
            external_pki, trust_domain,
            intermediate_cert_pem=tx.format_cert_pem(inter), intermediate_key_pem=tx.format_private_key_pem(key),
        )


def test_root_that_is_not_self_signed_is_refused(external_pki, trust_domain):
    with pytest.raises(InvalidInput, match="not self-signed"):
        _load(external_pki, trust_domain, root_cert_pem=external_pki.intermediate_pem)


def test_name_constraints_excluding_the_trust_domain_are_refused(external_pki, trust_domain):
    nc = x509.NameConstraints(permitted_subtrees=[x509.UniformResourceIdentifier("corp.example")], excluded_subtrees=None)
    inter = make_ca_cert(
        "Constrained Intermediate", external_pki.intermediate_key, issuer_cert=external_pki.root,
        issuer_key=external_pki.root_key, name_constraints=nc,
    )
    with pytest.raises(InvalidInput, match="do not permit URIs in trust domain"):
        _load(external_pki, trust_domain, intermediate_cert_pem=tx.format_cert_pem(inter))


def test_intermediate_bundle_with_a_middle_ca(external_pki, trust_domain, web_id):
    mid_key = tx.generate_private_key()
    mid = make_ca_cert("Middle CA", mid_key, issuer_cert=external_pki.root, issuer_key=external_pki.root_key)
    sub_key = tx.generate_private_key()
    sub = make_ca_cert("Issuing CA", sub_key, issuer_cert=mid, issuer_key=mid_key, path_length=0)
    ext = _load(
        external_pki, trust_domain,
        intermediate_cert_pem=tx.format_cert_pem(sub) + tx.format_cert_pem(mid),
        intermediate_key_pem=tx.format_private_key_pem(sub_key),
    )
    assert len(ext.active_root().intermediate_certs) == 2
    issue(ext, web_id)
    # pathLen 0 on the issuing CA: it cannot vouch for another CA, so it cannot cross-sign.
    with pytest.raises(InvalidInput, match="pathLen 0"):
        ext.cross_sign(external_pki.root_pem, now=NOW)
