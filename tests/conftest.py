"""Shared fixtures: real Tether processes on loopback, port 0; and the suite's rules.

- The whole session runs while "another program" listens on the first ports of the sidecar
  range (127.0.0.1:21000-21010), as happens on a shared machine: agents must skip them, and
  no test may depend on the range being free.
- A skip for a missing dependency that `make test` installs (tether.testing.deps.missing)
  is a failure under CI (`CI=true`).
- The run ends with the list of skipped tests and why (docs/testing.md).
"""

from __future__ import annotations

import pytest

import httpx

from tether.testing.agent import RunningAgent, open_in_process, start_dev_agent
from tether.testing.ports import FOREIGN_SIDECAR_RANGE, hold_range


pytest_plugins = ["tether.testing.suite"]  # CI turns missing-dependency skips into failures; the skip list


@pytest.fixture(scope="session", autouse=True)
def foreign_sidecar_ports():
    held = hold_range(*FOREIGN_SIDECAR_RANGE)  # the ports of it nobody else holds already
    yield [s.getsockname()[1] for s in held]
    for sock in held:
        sock.close()


@pytest.fixture(scope="module")
def dev_agent() -> RunningAgent:
    """One `tether agent -dev` subprocess per test module (in-memory store)."""
    agent = start_dev_agent()
    yield agent
    agent.stop()


@pytest.fixture
async def node():
    """An in-process dev agent on a real socket (127.0.0.1:0): `.url`, `.store`, `.agent`."""
    async with open_in_process("dev", node="n1") as running:
        yield running


@pytest.fixture
async def api(node):
    """An HTTP client for `node`."""
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory):
    """One 3-member etcd on loopback (held ports) for the session; tests use unique key prefixes."""
    from tether.testing.deps import missing
    from tether.testing.etcd import EtcdCluster, etcd_available

    if not etcd_available():
        pytest.skip(missing("etcd"))
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()
