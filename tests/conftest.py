"""Shared fixtures: real Tether processes on loopback, port 0."""

from __future__ import annotations

import pytest

import httpx

from tether.testing.agent import RunningAgent, serve_in_process, start_dev_agent


@pytest.fixture(scope="module")
def dev_agent() -> RunningAgent:
    """One `tether agent -dev` subprocess per test module (in-memory store)."""
    agent = start_dev_agent()
    yield agent
    agent.stop()


@pytest.fixture
async def api():
    """An in-process dev agent on a real socket (127.0.0.1:0) and an HTTP client for it."""
    async with serve_in_process("dev", node="n1") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client
