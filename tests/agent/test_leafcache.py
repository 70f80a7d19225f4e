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

import uvicorn

from tether.agent.connect_api import connect_router
from tether.agent.leafcache import LeafCache
from tether.agent.link import HttpLink, LocalLink
from tether.control.server import ControlPlane, ServerConfig
from tether.core.errors import RateLimited, Unavailable
from tether.daemon import new_app
from tether.netutil import open_listen_socket
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


class FakeTime:
    """The cache's clock and its pauses, under the test's control: the renewer's every wait
    is handed to the test (`next_pause`), and time moves only when the test says (`elapse`)."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)
        self._pauses: asyncio.Queue = asyncio.Queue()
        self._release: asyncio.Event | None = None

    def clock(self) -> datetime:
        return self.now

    async def pause(self, event: asyncio.Event, delay: float) -> None:
        release = asyncio.Event()
        await self._pauses.put((delay, release))
        await release.wait()

    async def next_pause(self) -> float:
        """The delay of the renewer's next wait (its attempt before it has run)."""
        delay, self._release = await asyncio.wait_for(self._pauses.get(), DEADLINE)
        return delay

    def elapse(self, seconds: float) -> None:
        """Let the waiting renewer go, `seconds` later."""
        self.now += timedelta(seconds=seconds)
        if self._release is not None:
            self._release.set()


class SwitchedLink(LocalLink):
    """The real in-process link, with a switch that makes signing fail as an outage would."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(cp)
        self.failure: Exception | None = None
        self.signed = 0

    async def sign(self, csr_pem: str, service: str, *args, **kwargs) -> dict:
        if self.failure is not None:
            raise self.failure
        self.signed += 1
        return await super().sign(csr_pem, service, *args, **kwargs)


@pytest.fixture
async def timed():
    """(FakeTime, control plane, link): a CA and a leaf cache on the same fake clock."""
    fake = FakeTime()
    plane = ControlPlane(MemoryStore(), ServerConfig())
    plane.ca.clock = fake.clock
    await plane.start()
    await plane.ca.set_config({"Config": {"LeafCertTTL": "10h"}})
    yield fake, plane, SwitchedLink(plane)
    await plane.stop()


async def timed_cache(fake: FakeTime, link: LocalLink, draw: float = 0.5) -> LeafCache:
    cache = LeafCache(link, datacenter="dc1", clock=fake.clock, pause=fake.pause, rng=lambda: draw)
    await cache.start()
    return cache


@pytest.mark.parametrize("draw, fraction", [(0.0, 0.6), (0.5, 0.75), (0.999999, 0.9)])
async def test_renewal_point_is_60_to_90_percent_of_the_lifetime(timed, draw, fraction):
    fake, _, link = timed
    cache = await timed_cache(fake, link, draw)
    try:
        first = await cache.leaf("web")
        asked = fake.now
        assert first.valid_before == asked + timedelta(hours=10)  # the window counts from the request
        assert abs((first.renew_at - asked) - timedelta(hours=10) * fraction) < timedelta(seconds=1)
        assert await fake.next_pause() == (first.renew_at - asked).total_seconds()  # sleeps until then
        fake.elapse((first.renew_at - asked).total_seconds())
        await until(lambda: cache.cached("web") is not first, "the renewal at the renewal point")
        renewed = cache.cached("web")
        assert renewed.serial != first.serial  # signed then: valid 10 h from the renewal (whole seconds)
        assert abs(renewed.valid_before - (fake.now + timedelta(hours=10))) < timedelta(seconds=1)
        assert link.signed == 2
    finally:
        await cache.stop()


async def test_failed_renewals_back_off_from_a_quarter_second_to_30_s_within_a_quarter_of_what_is_left(timed):
    fake, _, link = timed
    cache = await timed_cache(fake, link)
    try:
        first = await cache.leaf("web")
        fake.elapse(await fake.next_pause())  # to the renewal point (75%: 2.5 h left) ...
        link.failure = Unavailable("the server is down")  # ... where the server is gone
        delays = []
        for _ in range(10):
            delays.append(await fake.next_pause())
            fake.elapse(delays[-1])
        assert delays == [0.25, 0.5, 1, 2, 4, 8, 16, 30, 30, 30]
        assert (await cache.leaf("web")).serial == first.serial  # still valid: served (fail static)
        # Near expiry a retry never waits past a quarter of what is left.
        fake.elapse(0)
        await fake.next_pause()
        left = (first.valid_before - fake.now).total_seconds()
        fake.elapse(left - 40)
        assert await fake.next_pause() == 10.0  # 40 s left: a quarter
        fake.elapse(39.9)
        assert await fake.next_pause() == 0.25  # 0.1 s left: never below 0.25 s
    finally:
        await cache.stop()


@pytest.mark.parametrize("draw, expected", [(0.0, 2.0), (0.5, 4.0), (0.999, 5.996)])
async def test_a_rate_limited_renewal_waits_about_retry_after(timed, draw, expected):
    fake, _, link = timed
    cache = await timed_cache(fake, link, draw)
    try:
        await cache.leaf("web")
        link.failure = RateLimited("too many signing requests", retry_after=4.0)
        fake.elapse(await fake.next_pause())  # the renewal point: the attempt is refused with 429
        assert await fake.next_pause() == pytest.approx(expected)  # 0.5-1.5x Retry-After, from the draw
    finally:
        await cache.stop()


async def test_after_expiry_requests_fail_with_503_until_the_server_is_back(timed):
    fake, _, link = timed
    cache = await timed_cache(fake, link)
    app = new_app("leaf cache")
    app.include_router(connect_router(cache))
    sock = open_listen_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", loop="none"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    url = "http://%s:%d" % sock.getsockname()[:2]
    try:
        first = await cache.leaf("web")
        link.failure = Unavailable("the server is down")
        fake.elapse(await fake.next_pause())
        await fake.next_pause()  # retrying
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:
            await until(lambda: server.started, "the test server")
            assert (await api.get("/v1/agent/connect/ca/leaf/web")).json()["SerialNumber"] == first.serial
            fake.now = first.valid_before  # expired now
            r = await api.get("/v1/agent/connect/ca/leaf/web")
            assert r.status_code == 503 and "server is down" in r.text
            link.failure = None  # the server is back: the next request is signed at once
            r = await api.get("/v1/agent/connect/ca/leaf/web")
            assert r.status_code == 200 and r.json()["SerialNumber"] != first.serial
    finally:
        server.should_exit = True
        fake.elapse(0)
        await cache.stop()
        await serving


async def test_a_leaf_nobody_asks_for_in_3_days_is_dropped_at_its_next_renewal(timed):
    fake, plane, link = timed
    await plane.ca.set_config({"Config": {"LeafCertTTL": "100h"}})
    cache = await timed_cache(fake, link, draw=0.0)  # renewals every 60 h of a 100 h leaf
    try:
        await cache.leaf("idle")
        fake.elapse(await fake.next_pause())  # 60 h later: used 60 h ago, renewed
        await until(lambda: link.signed == 2, "the first renewal")
        kept = cache.cached("idle")
        fake.elapse(await fake.next_pause())  # 120 h after its last request: more than 3 days
        await until(lambda: cache.cached("idle") is None, "the idle leaf to be dropped")
        assert link.signed == 2  # dropped, not renewed
        assert kept is not None and (await cache.leaf("idle")).serial != kept.serial  # asked again: signed anew
    finally:
        fake.elapse(0)
        await cache.stop()


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
