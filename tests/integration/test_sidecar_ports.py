"""Sidecar ports that work (issue 10, points 7 and 8), with real managed sidecars.

- The agent takes a port of the sidecar range only if the kernel lets it bind there: a
  foreign listener on the next port of the range is skipped, not dialled by peers.
- A sidecar is healthy only when *its* listener is open: a foreign process accepting on
  the sidecar's port does not make it pass, and the failure names the address.
- Consul 1.2's `connect.proxy.config.bind_port` is where the sidecar listens, what the
  catalog advertises and what health reports: discovery works.
- A new service carries traffic long before any check interval: its checks run at once, and
  the sidecar passes its own check as soon as it listens.
"""

from __future__ import annotations

import socket

import pytest

from proxy_kit import Mesh, port_of, roundtrip, wait_for
from tether.core.duration import parse_duration
from tether.core.registration import SIDECAR_CHECK_INTERVAL, SIDECAR_PORT_RANGE
from tether.testing.ports import FOREIGN_SIDECAR_RANGE, held_port


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def _listening_check(mesh: Mesh, proxy_id: str) -> dict:
    checks = mesh.api.get("/v1/agent/checks").json()
    return next(c for c in checks.values() if c["ServiceID"] == proxy_id and c["Name"] == "Connect Sidecar Listening")


def _foreign_listener_after(port: int) -> socket.socket:
    """Listen, as some other program would, on the first port after `port` that is free."""
    for candidate in range(port + 1, SIDECAR_PORT_RANGE[1] + 1):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", candidate))
            sock.listen(8)
            return sock
        except OSError:
            sock.close()
    pytest.fail(f"no free port after {port} in the sidecar range")


def test_a_foreign_listener_on_the_next_port_of_the_range_is_skipped(mesh):
    first = mesh.register("alpha", mesh.app().port)
    foreign = _foreign_listener_after(first)
    try:
        taken = foreign.getsockname()[1]
        app = mesh.app(b"beta")
        second = mesh.register("beta", app.port)
        assert second != taken and SIDECAR_PORT_RANGE[0] <= second <= SIDECAR_PORT_RANGE[1]
        ready = mesh.ready("beta")
        assert port_of(ready["inbound"]) == second  # the catalog's port is the one it listens on
        up = mesh.port()
        mesh.register("gamma", 1, upstreams=[{"destination_name": "beta", "local_bind_port": up}])
        mesh.healthy("beta")
        assert wait_for("gamma -> beta", lambda: roundtrip(up, b"hi", greeting=True) == b"beta\nhi")
        foreign.settimeout(0)
        with pytest.raises(BlockingIOError):
            foreign.accept()  # nobody was sent to the foreign program
    finally:
        foreign.close()


def test_a_foreign_process_on_the_sidecar_port_does_not_make_it_healthy(mesh):
    foreign = socket.create_server(("0.0.0.0", 0))  # accepts on every address, as the sidecar would
    try:
        port = foreign.getsockname()[1]
        mesh.api.put("/v1/agent/service/register", json={"name": "delta", "port": mesh.app().port, "connect": {
            "sidecar_service": {"port": port}}}).raise_for_status()
        check = wait_for("the sidecar to report why it is not serving", lambda: (
            lambda c: c if "in use" in c["Output"] else None)(_listening_check(mesh, "delta-sidecar-proxy")))
        assert check["Status"] == "critical"
        assert f"cannot listen on 0.0.0.0:{port}: Address already in use" in check["Output"]
        assert mesh.api.get("/v1/health/connect/delta", params={"passing": 1}).json() == []
        assert any(f"0.0.0.0:{port}: Address already in use" in line for line in mesh.agent.log)
    finally:
        foreign.close()
        mesh.api.put("/v1/agent/service/deregister/delta")


def test_consul_12_bind_port_is_listened_on_advertised_and_checked(mesh):
    app = mesh.app(b"legacy")
    with held_port() as bind:
        mesh.api.put("/v1/agent/service/register", json={"name": "legacy", "port": app.port, "connect": {
            "proxy": {"config": {"bind_port": bind.port}}}}).raise_for_status()
        assert mesh.api.get("/v1/agent/service/legacy-sidecar-proxy").json()["Port"] == bind.port
        entry = mesh.healthy("legacy")[0]
        assert entry["Service"]["Port"] == bind.port
        assert port_of(mesh.ready("legacy")["inbound"]) == bind.port
        assert f":{bind.port}" in _listening_check(mesh, "legacy-sidecar-proxy")["Output"]
        up = mesh.port()
        mesh.register("modern", 1, upstreams=[{"destination_name": "legacy", "local_bind_port": up}])
        assert wait_for("modern -> legacy", lambda: roundtrip(up, b"x", greeting=True) == b"legacy\nx")


def test_a_new_service_is_healthy_before_its_check_interval_has_passed(mesh):
    """Consul runs a new check first after one interval, so a sidecar took 10 s (its TCP check's
    interval) to carry traffic. Here the service's own TCP check polls once an hour, and the
    sidecar must be passing before 10 s are over: both checks ran at once."""
    app = mesh.app(b"fresh")
    body = {"name": "fresh", "port": app.port, "check": {"tcp": f"127.0.0.1:{app.port}", "interval": "1h"},
            "connect": {"sidecar_service": {}}}
    mesh.api.put("/v1/agent/service/register", json=body).raise_for_status()
    interval = parse_duration(SIDECAR_CHECK_INTERVAL)
    entry = wait_for("fresh's sidecar to pass", lambda: mesh.api.get(
        "/v1/health/connect/fresh", params={"passing": 1}).json(), timeout=interval)[0]
    statuses = {c["CheckID"]: c["Status"] for c in entry["Checks"]}
    assert set(statuses.values()) == {"passing"}, statuses
    assert mesh.api.get("/v1/agent/checks").json()["service:fresh"]["Status"] == "passing"
    pid = mesh.ready("fresh")["pid"]
    assert f"tether proxy pid {pid} listening" in _listening_check(mesh, "fresh-sidecar-proxy")["Output"]
    up = mesh.port()
    mesh.register("eager", 1, upstreams=[{"destination_name": "fresh", "local_bind_port": up}])
    assert wait_for("first traffic", lambda: roundtrip(up, b"go", greeting=True) == b"fresh\ngo")


def test_the_held_start_of_the_range_is_skipped(mesh, foreign_sidecar_ports):
    """tests/conftest.py listens on 21000-21010 for the whole session, as a foreign program
    (the ports of it that nobody else on the machine holds already: either way, every one of
    them is taken by someone, and the agent must take none)."""
    first, last = FOREIGN_SIDECAR_RANGE
    taken = [p for p in range(first, last + 1) if not _bindable(p)]
    assert taken, "the session fixture holds what others on the machine do not"
    port = mesh.register("epsilon", mesh.app().port)
    assert port not in taken
    mesh.healthy("epsilon")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
