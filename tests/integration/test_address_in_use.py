"""Every "address already in use" names the address (issue 10, point 7): the agent's API and
DNS ports, a proxy's upstream listener and its admin endpoint. Each is a port another program
listens on (the test), and each error is one line, exit code 2."""

from __future__ import annotations

import socket

import pytest

from tether.testing.agent import run_cli, start_dev_agent
from tether.testing.ports import held_port


@pytest.fixture
def taken():
    """A TCP port another program listens on."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _one_line(r) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def test_the_agents_api_port(taken):
    r = run_cli("agent", "-dev", "-http-port", str(taken), "-dns-port", "-1", "-no-managed-proxies", timeout=60)
    line = _one_line(r)
    assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in line and "-http-port" in line


def test_the_agents_dns_port():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        port = udp.getsockname()[1]
        r = run_cli("agent", "-dev", "-http-port", "0", "-dns-port", str(port), "-no-managed-proxies", timeout=60)
        line = _one_line(r)
        assert f"cannot serve DNS on 127.0.0.1:{port}: Address already in use" in line and "-dns-port" in line
    finally:
        udp.close()


@pytest.fixture(scope="module")
def agent():
    a = start_dev_agent()
    yield a
    a.stop()


def test_a_proxys_upstream_listener(agent, taken):
    r = run_cli("connect", "proxy", "-service", "web", "-upstream", f"db:{taken}", "-http-addr", agent.addr)
    assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in _one_line(r)


def test_a_proxys_admin_endpoint(agent, taken):
    with held_port() as up:  # the upstream's port, held by the test: the proxy gets past it
        r = run_cli("connect", "proxy", "-service", "web", "-upstream", f"db:{up.port}", "-admin-bind",
                    f"127.0.0.1:{taken}", "-http-addr", agent.addr)
    assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in _one_line(r)
