"""Fixtures for the ACL tests: a dev agent with ACLs on (default deny) on a real socket."""

from __future__ import annotations

import httpx
import pytest

from tether.core.agent_config import AclConfig
from tether.testing.agent import serve_in_process

from acl_kit import MANAGEMENT


@pytest.fixture
async def acl_url():
    async with serve_in_process("dev", node="n1", acl=AclConfig(enabled=True, default_policy="deny",
                                                                initial_management=MANAGEMENT)) as url:
        yield url


@pytest.fixture
async def admin(acl_url):
    """A client holding the initial management token."""
    async with httpx.AsyncClient(base_url=acl_url, timeout=30, headers={"X-Consul-Token": MANAGEMENT}) as client:
        yield client


@pytest.fixture
async def anon(acl_url):
    """A client with no token (the anonymous token)."""
    async with httpx.AsyncClient(base_url=acl_url, timeout=30) as client:
        yield client

