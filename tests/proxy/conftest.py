"""Proxy test fixtures. Every async test here runs on both event loops the engine supports:
the stdlib asyncio loop and uvloop (what the proxy process uses)."""

from __future__ import annotations

import asyncio

import pytest
from proxy_testkit import EchoApp, make_pki

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def pki():
    return make_pki()


@pytest.fixture
async def app():
    a = await EchoApp().start()
    yield a
    await a.stop()


@pytest.fixture
async def engines():
    """Collects engines made in a test and closes them at the end."""
    made = []
    yield made
    for e in made:
        await e.close()
