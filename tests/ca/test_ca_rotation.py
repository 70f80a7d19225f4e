"""Rotation planning and pruning over CARoot lists."""

from __future__ import annotations

import datetime as dt

import pytest
from ca_testkit import NOW, issue

from tether.ca import x509 as tx
from tether.ca.builtin import BuiltinCA
from tether.ca.provider import CARoot, consul_roots_json
from tether.ca.rotation import active_root, plan_rotation, prune_roots
from tether.core.chain import match_chain
from tether.core.errors import Conflict, InvalidInput, NotFound

TTL = 72 * 3600.0


def test_bootstrap_is_just_the_new_root(builtin):
    assert plan_rotation([], None, builtin, now=NOW) == (builtin.active_root(),)


def test_rotating_to_the_active_root_changes_nothing(builtin):
    roots = (builtin.active_root(),)
    assert plan_rotation(roots, builtin, builtin, now=NOW) == roots


def test_rotation_keeps_old_root_inactive_and_cross_signs(builtin, trust_domain, web_id):
    new = BuiltinCA.generate(trust_domain, NOW)
    old_root, new_root = plan_rotation([builtin.active_root()], builtin, new, now=NOW)
    assert old_root.id == builtin.active_root().id and not old_root.active and old_root.rotated_out_at == NOW
    assert new_root.id == new.active_root().id and new_root.active and new_root.rotated_out_at is None
    cross = tx.load_certificate_pem(new_root.intermediate_certs[0])
    new_cert = tx.load_certificate_pem(new_root.root_cert_pem)
    old_cert = tx.load_certificate_pem(old_root.root_cert_pem)
    assert cross.subject == new_cert.subject and cross.public_key() == new_cert.public_key()
    assert cross.issuer == old_cert.subject
    assert tx.subject_key_id(cross) == tx.subject_key_id(new_cert)
    # match_chain agrees with OpenSSL (see test_tls_interop): new leaf -> cross -> old root.
    leaf = tx.load_certificate_pem(issue(new, web_id).chain_pem)
    assert match_chain(leaf, [cross], [old_cert], now=NOW) == (leaf, cross, old_cert)


def test_roots_json_lists_both_roots_with_one_active(builtin, trust_domain):
    new = BuiltinCA.generate(trust_domain, NOW)
    roots = plan_rotation([builtin.active_root()], builtin, new, now=NOW)
    body = consul_roots_json(roots, trust_domain)
    assert body["ActiveRootID"] == new.active_root().id and body["TrustDomain"] == trust_domain
    assert [r["Active"] for r in body["Roots"]] == [False, True]
    assert body["Roots"][1]["IntermediateCerts"] == list(roots[1].intermediate_certs)


def test_second_rotation_retires_the_middle_root(builtin, trust_domain):
    b = BuiltinCA.generate(trust_domain, NOW)
    c = BuiltinCA.generate(trust_domain, NOW)
    later = NOW + dt.timedelta(hours=1)
    roots = plan_rotation(plan_rotation([builtin.active_root()], builtin, b, now=NOW), b, c, now=later)
    assert [r.active for r in roots] == [False, False, True]
    assert [r.rotated_out_at for r in roots] == [NOW, later, None]


def test_prune_drops_only_roots_inactive_for_more_than_two_leaf_ttls(builtin, trust_domain):
    new = BuiltinCA.generate(trust_domain, NOW)
    roots = plan_rotation([builtin.active_root()], builtin, new, now=NOW)
    exactly = NOW + dt.timedelta(seconds=2 * TTL)
    assert prune_roots(roots, now=exactly, leaf_ttl_seconds=TTL) == roots
    pruned = prune_roots(roots, now=exactly + dt.timedelta(seconds=1), leaf_ttl_seconds=TTL)
    assert pruned == (roots[1],)
    assert prune_roots(pruned, now=NOW + dt.timedelta(days=9999), leaf_ttl_seconds=TTL) == pruned


def test_trust_domain_change_is_refused(builtin):
    other = BuiltinCA.generate("other.tether", NOW)
    with pytest.raises(InvalidInput, match="trust domain"):
        plan_rotation([builtin.active_root()], builtin, other, now=NOW)


def test_without_the_old_provider_rotation_needs_force(builtin, trust_domain):
    new = BuiltinCA.generate(trust_domain, NOW)
    with pytest.raises(InvalidInput, match="ForceWithoutCrossSigning"):
        plan_rotation([builtin.active_root()], None, new, now=NOW)
    _, new_root = plan_rotation([builtin.active_root()], None, new, now=NOW, force_without_cross_signing=True)
    assert new_root.active and new_root.intermediate_certs == ()


def test_old_provider_must_hold_the_active_root(builtin, trust_domain):
    stranger = BuiltinCA.generate(trust_domain, NOW)
    new = BuiltinCA.generate(trust_domain, NOW)
    with pytest.raises(Conflict, match="active root"):
        plan_rotation([builtin.active_root()], stranger, new, now=NOW)


def test_active_root_requires_exactly_one(builtin):
    with pytest.raises(NotFound):
        active_root([])
    two = [builtin.active_root(), builtin.active_root()]
    with pytest.raises(Conflict):
        active_root(two)


def test_ca_root_dict_round_trip(builtin, trust_domain):
    new = BuiltinCA.generate(trust_domain, NOW)
    for root in plan_rotation([builtin.active_root()], builtin, new, now=NOW):
        assert CARoot.from_dict(root.to_dict()) == root
    with pytest.raises(InvalidInput, match="malformed"):
        CARoot.from_dict({"id": "x"})
