"""The agent's leaf cache against a real control plane: in-process (LocalLink) and over HTTP.

Leaves are real certificates from the real CA; the only thing lowered for speed is the
leaf TTL floor (`ca_min_leaf_ttl`), so renewal and expiry happen within seconds.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether.agent.leafcache import LeafCache
from tether.agent.link import HttpLink, LocalLink
from tether.control.server import ControlPlane, ServerConfig
from tether.core.errors import Unavailable
from tether.store.cached import MemoryStore
from tether.testing.agent import serve_in_process

DEADLINE = 20.0  # seconds; only bounds a wait that normally ends far sooner


@pytest.fixture
async def cp():
    plane = ControlPlane(MemoryStore(), ServerConfig(ca_min_leaf_ttl=1.0))
    await plane.start()
    yield plane
    await plane.stop()


@pytest.fixture
async def cache(cp):
    leaves = LeafCache(LocalLink(cp), datacenter="dc1")
    await leaves.start()
    yield leaves
    await leaves.stop()


def now() -> datetime:
    return datetime.now(timezone.utc)


async def until(predicate, what: str, timeout: float = DEADLINE) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_first_request_signs_then_memory_answers(cp, cache):
    first = await cache.leaf("web")
    again = await cache.leaf("web")
    assert again is first  # the same object: no signature, no I/O
    cert = x509.load_pem_x509_certificates(first.cert_pem.encode())[0]
    key = serialization.load_pem_private_key(first.key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    uri = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uri.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{cp.ca.trust_domain}/ns/default/dc/dc1/svc/web"]
    assert first.to_json()["PrivateKeyPEM"] == first.key_pem
    assert first.root_id == cp.ca.roots_json()["ActiveRootID"]


async def test_keys_differ_per_service_and_per_renewal(cp, cache):
    web, db = await cache.leaf("web"), await cache.leaf("db")
    assert web.key_pem != db.key_pem and web.serial != db.serial


async def test_renews_before_expiry_without_being_asked(cp, cache):
    await cp.ca.set_config({"Config": {"LeafCertTTL": "3s"}})
    first = await cache.leaf("web")
    lifetime = first.valid_before - first.valid_after
    start = first.valid_before - timedelta(seconds=3)
    assert start <= first.renew_at <= first.valid_before  # renewal point inside the window
    assert first.renew_at >= start + (first.valid_before - start) * 0.6 - timedelta(seconds=1)
    assert lifetime <= timedelta(seconds=3 + 61)  # backdated a minute, as Consul does
    await until(lambda: cache.cached("web") is not first, "a renewal")
    renewed = cache.cached("web")
    assert renewed.index > first.index and renewed.serial != first.serial
    # Issued (ValidAfter + the 1-minute backdate) before the previous one expired: no gap.
    assert renewed.valid_after + timedelta(minutes=1) < first.valid_before


async def test_blocked_reader_wakes_with_the_renewed_leaf(cp, cache):
    await cp.ca.set_config({"Config": {"LeafCertTTL": "2s"}})
    first = await cache.leaf("web")
    woke = await asyncio.wait_for(cache.wait_leaf("web", first.index, 30), DEADLINE)
    assert woke.index > first.index and woke.serial != first.serial


async def test_blocked_reader_times_out_with_the_same_leaf(cache):
    first = await cache.leaf("web")
    assert (await cache.wait_leaf("web", first.index, 0.05)) is first


async def test_root_rotation_reissues_every_leaf_at_once(cp, cache):
    web, db = await cache.leaf("web"), await cache.leaf("db")
    _, roots_index = await cache.roots()
    await cp.ca.set_config({"Provider": "consul", "Config": {"RotateNow": True}})
    new_root = cp.ca.roots_json()["ActiveRootID"]
    assert new_root != web.root_id
    await until(lambda: all(cache.cached(s).root_id == new_root for s in ("web", "db")), "re-issued leaves")
    assert cache.cached("web").serial != web.serial and cache.cached("db").serial != db.serial
    roots, index = await cache.roots()
    assert index > roots_index and roots["ActiveRootID"] == new_root
    # The new leaf carries the cross-signed root, so peers that only know the old root accept it.
    assert cache.cached("web").cert_pem.count("BEGIN CERTIFICATE") == 2


async def test_roots_wait_wakes_on_rotation(cp, cache):
    _, index = await cache.roots()
    waiter = asyncio.create_task(cache.wait_roots(index, 30))
    await asyncio.sleep(0)
    await cp.ca.set_config({"Provider": "consul", "Config": {"RotateNow": True}})
    doc, new_index = await asyncio.wait_for(waiter, DEADLINE)
    assert new_index > index and len(doc["Roots"]) == 2


async def test_bad_service_name_is_refused_before_any_signature(cache):
    with pytest.raises(Exception, match="service name"):
        await cache.leaf("not_a_label")


async def test_fail_static_serves_cached_leaf_until_expiry(caplog):
    """Over HTTP: the server goes away; the cached leaf is served until it expires, and logged."""
    caplog.set_level(logging.WARNING, logger="tether.agent.leaves")
    async with serve_in_process("server", ca_min_leaf_ttl=1.0) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            r = await api.put("/v1/connect/ca/configuration", json={"Config": {"LeafCertTTL": "4s"}})
            assert r.status_code == 200, r.text
        link = HttpLink(url)
        cache = LeafCache(link, datacenter="dc1", roots_wait=0.5)
        await cache.start()
        first = await cache.leaf("web")
    try:  # the server is gone now
        assert (await cache.leaf("web")).serial == first.serial
        await until(lambda: "renewal failed" in caplog.text, "a logged renewal failure")
        assert first.key_pem not in caplog.text  # failures are logged, keys never
        assert (await cache.leaf("web")).serial == first.serial  # still valid: still served
        await asyncio.sleep(max(0.0, (first.valid_before - now()).total_seconds()) + 0.05)
        with pytest.raises(Unavailable):
            await cache.leaf("web")
    finally:
        await cache.stop()
        await link.close()
