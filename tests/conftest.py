"""Shared fixtures: real Tether processes on loopback, port 0."""

from __future__ import annotations

import pytest

from tether.testing.agent import RunningAgent, start_dev_agent


@pytest.fixture(scope="module")
def dev_agent() -> RunningAgent:
    """One `tether agent -dev` subprocess per test module (in-memory store)."""
    agent = start_dev_agent()
    yield agent
    agent.stop()
