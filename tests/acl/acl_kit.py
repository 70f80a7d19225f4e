"""Helpers for the ACL tests: tokens and clients that carry them."""

from __future__ import annotations

import httpx

MANAGEMENT = "11111111-2222-3333-4444-555555555555"


async def make_token(admin: httpx.AsyncClient, **body) -> str:
    """A new token's SecretID."""
    r = await admin.put("/v1/acl/token", json=body)
    assert r.status_code == 200, r.text
    return r.json()["SecretID"]


def as_token(url: str, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30, headers={"X-Consul-Token": secret})
