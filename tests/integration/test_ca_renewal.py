"""Renewal after renewal with leaves that live 8 seconds.

One client blocks on the leaf (`?index=`) and wakes with every renewed certificate;
another polls without blocking. There must be no moment without a valid leaf: each
leaf is issued before the previous one expires, and no answer is ever expired. The
renewals happen in the agent on its own (the blocking client only listens). The test
runs until it has seen RENEWALS of them (a deadline only bounds a stall); when in a
lifetime they happen is tested with an injected clock (tests/agent/test_leafcache.py).

The leaf TTL floor is lowered for this test only (`ca_min_leaf_ttl`); everything else is
the real agent, CA and HTTP API.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cryptography import x509

from tether.ca import x509 as tx
from tether.core.chain import match_chain
from tether.testing.agent import serve_in_process

RENEWALS = 6
LEAF_TTL = "8s"
#: Fails the test if the renewals stall; RENEWALS take about 40 s (each at 60-90% of 8 s).
DEADLINE = 120.0
BACKDATE = timedelta(minutes=1)  # the CA backdates ValidAfter by a minute (clock skew)
POLL_EVERY = 0.25
MAX_EVENTS = 10_000  # bound on each loop, besides the clock


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.slow
async def test_agent_renews_continuously_with_no_expired_gap():
    async with serve_in_process("dev", node="n1", ca_min_leaf_ttl=1.0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as api:
            r = await api.put("/v1/connect/ca/configuration", json={"Config": {"LeafCertTTL": LEAF_TTL}})
            assert r.status_code == 200, r.text
            roots = [tx.load_certificate_pem(x["RootCert"])
                     for x in (await api.get("/v1/agent/connect/ca/roots")).json()["Roots"]]
            first = await api.get("/v1/agent/connect/ca/leaf/web")
            hard_stop = time.monotonic() + DEADLINE
            leaves = [first.json()]
            polled: list[tuple[datetime, dict]] = []
            watching_done = asyncio.Event()

            async def watch() -> None:
                index = first.headers["X-Consul-Index"]
                while len(leaves) <= RENEWALS:
                    assert time.monotonic() < hard_stop, f"renewals stalled after {len(leaves) - 1}"
                    r = await api.get("/v1/agent/connect/ca/leaf/web", params={"index": index, "wait": "5s"})
                    assert r.status_code == 200, r.text
                    if r.headers["X-Consul-Index"] != index:
                        index = r.headers["X-Consul-Index"]
                        leaves.append(r.json())
                watching_done.set()

            async def poll() -> None:
                while not watching_done.is_set() and len(polled) < MAX_EVENTS and time.monotonic() < hard_stop:
                    r = await api.get("/v1/agent/connect/ca/leaf/web")
                    polled.append((datetime.now(timezone.utc), r.json()))
                    await asyncio.sleep(POLL_EVERY)

            await asyncio.gather(watch(), poll())

    serials = [leaf["SerialNumber"] for leaf in leaves]
    assert len(set(serials)) == len(serials) == RENEWALS + 1  # every wake-up brought a new certificate
    assert polled, "the poller never ran"
    for previous, nxt in zip(leaves, leaves[1:]):
        issued = parse_time(nxt["ValidAfter"]) + BACKDATE
        assert issued < parse_time(previous["ValidBefore"]), (
            f"gap: {nxt['SerialNumber']} issued at {issued} after {previous['SerialNumber']} "
            f"expired at {previous['ValidBefore']}")
    for seen_at, leaf in polled:
        assert parse_time(leaf["ValidAfter"]) <= seen_at < parse_time(leaf["ValidBefore"]), leaf["SerialNumber"]
        assert leaf["SerialNumber"] in serials  # the poller never caused an issue of its own
    for leaf in leaves:
        certs = [x509.load_pem_x509_certificate(p.encode()) for p in _split(leaf["CertPEM"])]
        match_chain(certs[0], certs[1:], roots, now=parse_time(leaf["ValidAfter"]) + BACKDATE)


def _split(bundle: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part + marker + "\n" for part in bundle.split(marker) if "BEGIN" in part]
