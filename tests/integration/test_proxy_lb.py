"""Load balancing across real instances (issue 5, point 6): round robin over two healthy
instances (they take turns), retry on another instance when a connect fails, passive
outlier ejection of an instance that keeps failing, and least-connections from
`Config.lb_policy`."""

from __future__ import annotations

import socket

import pytest

from proxy_kit import Mesh, metric_value, metrics, roundtrip, wait_for


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def _greeting(port: int) -> bytes:
    return roundtrip(port, b"ping", greeting=True).split(b"\n", 1)[0]


def test_round_robin_retry_and_outlier_ejection(mesh):
    for n in (1, 2):
        mesh.register("catalog", mesh.app(f"catalog-{n}".encode()).port, id=f"catalog-{n}")
    up = mesh.port()
    mesh.register("front", 1, upstreams=[{"destination_name": "catalog", "local_bind_port": up}])
    ready = mesh.ready("front")
    mesh.healthy("catalog", count=2)
    wait_for("both live instances in front's pool", lambda: len({_greeting(up) for _ in range(6)}) == 2)
    # Round robin: one connection after another, the instances take turns.
    seen = [_greeting(up) for _ in range(12)]
    assert set(seen) == {b"catalog-1", b"catalog-2"}
    assert all(a != b for a, b in zip(seen, seen[1:])), seen

    # A third instance whose port refuses connections (the test holds it; nothing listens): a
    # Connect-native registration without checks counts as passing, so discovery returns it.
    dead = mesh.port()
    mesh.api.put("/v1/agent/service/register", json={"name": "catalog", "id": "catalog-dead", "port": dead,
                                                     "address": "127.0.0.1", "connect": {"native": True}})
    mesh.healthy("catalog", count=3)

    def retried() -> list:
        assert _greeting(up) in (b"catalog-1", b"catalog-2")  # every connection still succeeds
        return [r for r in mesh.access_logs(direction="outbound", destination="catalog", result="allowed")
                if "retried" in r["flags"]]

    retried = wait_for("a connection retried after the dead instance refused it", retried)
    assert all(r["upstream_address"] != f"127.0.0.1:{dead}" for r in retried)
    wait_for("the dead instance to be ejected", lambda: metric_value(
        metrics(ready["admin"]), "tether_proxy_upstream_ejections_total", upstream="catalog") >= 1 or _greeting(up) and 0)


def test_least_connections_from_the_registration(mesh):
    for n in (1, 2):
        mesh.register("search", mesh.app(f"search-{n}".encode()).port, id=f"search-{n}")
    up = mesh.port()
    mesh.register("portal", 1, upstreams=[{"destination_name": "search", "local_bind_port": up,
                                           "config": {"lb_policy": "least_conn"}}])
    ready = mesh.ready("portal")
    mesh.healthy("search", count=2)
    wait_for("both search instances in portal's pool", lambda: len({_greeting(up) for _ in range(4)}) == 2)
    wait_for("those connections to end", lambda: not metric_value(
        metrics(ready["admin"]), "tether_proxy_connections_active", direction="outbound"))
    held = socket.create_connection(("127.0.0.1", up), timeout=5)  # busy on one instance ...
    try:
        busy = held.makefile("rb").readline().strip()
        # ... so every new connection goes to the other one while it stays open. Each is
        # waited for until its access-log line is out (its pool slot released).
        others = set()
        for _ in range(4):
            done = len(mesh.access_logs(direction="outbound", destination="search"))
            others.add(_greeting(up))
            wait_for("the connection's end", lambda: len(
                mesh.access_logs(direction="outbound", destination="search")) > done)
        assert busy not in others and len(others) == 1
    finally:
        held.close()
