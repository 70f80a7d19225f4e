"""Root rotation with traffic: a client keeps fetching leaves and handshaking with them
(real OpenSSL, mutual TLS) while the root is rotated twice. Every leaf must verify at
every moment: new leaves for peers that still hold the previous roots, old leaves for
peers that hold the new ones. Then retired roots are pruned after 2x the leaf TTL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
from cryptography import x509

from tether.testing.agent import serve_in_process
from tether.testing.tls import mtls_handshake

MAX_ROUNDS = 2000  # bound on the client loop
DEADLINE = 30.0


@dataclass(frozen=True)
class Leaf:
    chain_pem: str
    key_pem: str
    issuer: x509.Name


async def fetch_leaf(api: httpx.AsyncClient, service: str) -> Leaf:
    body = (await api.get(f"/v1/agent/connect/ca/leaf/{service}")).raise_for_status().json()
    first = x509.load_pem_x509_certificates(body["CertPEM"].encode())[0]
    return Leaf(body["CertPEM"], body["PrivateKeyPEM"], first.issuer)


async def fetch_roots(api: httpx.AsyncClient) -> dict:
    """The agent's cached roots: what a proxy trusts (they follow the server within moments)."""
    return (await api.get("/v1/agent/connect/ca/roots")).raise_for_status().json()


async def server_roots(api: httpx.AsyncClient) -> dict:
    """The server's roots: changed by the time a configuration PUT returns."""
    return (await api.get("/v1/connect/ca/roots")).raise_for_status().json()


def root_pems(roots: dict) -> list[str]:
    return [r["RootCert"] for r in roots["Roots"]]


def active_subject(roots: dict) -> x509.Name:
    active = next(r for r in roots["Roots"] if r["Active"])
    return x509.load_pem_x509_certificate(active["RootCert"].encode()).subject


async def test_rotation_under_traffic_never_breaks_a_handshake(tmp_path):
    """Peers are modelled as they are in a mesh: roots refresh within moments (the agent
    watches them) while leaves are renewed only days later. So at every moment:
      - a peer that has not yet seen the latest rotation (its leaf and roots from just
        before it) and a peer with the newest leaf and roots accept each other;
      - a leaf from before the first rotation, not yet renewed, is accepted by peers
        with the newest roots, and accepts theirs.
    """
    handshake = mtls_handshake
    async with serve_in_process("dev", node="n1") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            ancient = await fetch_leaf(api, "web")
            before_rotation = (ancient, root_pems(await fetch_roots(api)))
            failures: list[str] = []
            rounds = 0
            issuers: set[str] = set()
            stop = asyncio.Event()

            async def client() -> None:
                nonlocal rounds
                while not stop.is_set() and rounds < MAX_ROUNDS:
                    trust = root_pems(await fetch_roots(api))
                    db = await fetch_leaf(api, "db")
                    # Read after the leaf: it was taken before any rotation this leaf can come from.
                    stale_leaf, stale_trust = before_rotation
                    issuers.add(db.issuer.rfc4514_string())
                    checks = {
                        "new leaf -> peer that missed the rotation": handshake(db, trust, stale_leaf, stale_trust),
                        "peer that missed the rotation -> new leaf": handshake(stale_leaf, stale_trust, db, trust),
                        "unrenewed first leaf -> new leaf": handshake(ancient, trust, db, trust),
                        "new leaf -> unrenewed first leaf": handshake(db, trust, ancient, trust),
                        "new leaf <-> new leaf": handshake(db, trust, await fetch_leaf(api, "web"), trust),
                    }
                    failures.extend(f"round {rounds}: {k}: {v}" for k, v in checks.items() if v)
                    rounds += 1

            async def rounds_pass(n: int) -> None:
                target = rounds + n
                deadline = asyncio.get_running_loop().time() + DEADLINE
                while rounds < target:
                    assert not task.done(), "client loop ended early"
                    assert asyncio.get_running_loop().time() < deadline, "client loop stalled"
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(client())
            await rounds_pass(3)
            for _ in range(2):
                before_rotation = (await fetch_leaf(api, "web"), root_pems(await fetch_roots(api)))
                rotate = {"Provider": "consul", "Config": {"RotateNow": True}}
                r = await api.put("/v1/connect/ca/configuration", json=rotate)
                assert r.status_code == 200, r.text
                roots = await server_roots(api)
                wanted = active_subject(roots)
                deadline = asyncio.get_running_loop().time() + DEADLINE
                while (await fetch_leaf(api, "db")).issuer != wanted:  # the agent re-issues on its own
                    assert asyncio.get_running_loop().time() < deadline, "leaf not re-issued under the new root"
                    await asyncio.sleep(0.01)
                await rounds_pass(3)
            stop.set()
            await task

    assert not failures, "\n".join(failures[:10])
    assert len(issuers) == 3  # leaves from all three roots went through the handshakes
    assert len(roots["Roots"]) == 3 and sum(r["Active"] for r in roots["Roots"]) == 1


async def test_retired_roots_are_pruned_after_twice_the_longest_leaf_ttl():
    async with serve_in_process("dev", node="n1", ca_min_leaf_ttl=1.0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            first = (await server_roots(api))["ActiveRootID"]  # signed with the default 72h TTL
            rotate = {"Provider": "consul", "Config": {"RotateNow": True, "LeafCertTTL": "2s"}}
            assert (await api.put("/v1/connect/ca/configuration", json=rotate)).status_code == 200
            second = (await server_roots(api))["ActiveRootID"]  # only ever signed 2s leaves
            await fetch_leaf(api, "web")
            assert (await api.put("/v1/connect/ca/configuration", json=rotate)).status_code == 200
            third = (await server_roots(api))["ActiveRootID"]
            assert len({first, second, third}) == 3
            # The roots watch wakes when the second root is dropped (about 4s after it retired).
            r = await api.get("/v1/agent/connect/ca/roots")
            deadline = asyncio.get_running_loop().time() + DEADLINE
            while {x["ID"] for x in r.json()["Roots"]} != {first, third}:
                assert asyncio.get_running_loop().time() < deadline, f"roots now {r.json()['Roots']}"
                r = await api.get("/v1/agent/connect/ca/roots",
                                  params={"index": r.headers["X-Consul-Index"], "wait": "10s"})
            # The first root signed 72h leaves, so it stays although it retired earlier.
            assert next(x for x in r.json()["Roots"] if x["ID"] == first)["Active"] is False
