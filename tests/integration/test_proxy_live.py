"""Live changes under traffic, without restarting the sidecars (issue 5, point 5): a CA root
rotation (open connections keep working, new handshakes use the new leaf), an intention
flip (the denied source's open connections are closed, the allowed ones stay), and a
registration change (an upstream added and one removed) applied by the running proxy.
"""

from __future__ import annotations

import socket

import pytest
from cryptography import x509

from proxy_kit import Mesh, open_stream, process_alive, roundtrip, still_open, wait_for


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def presented_serial(mesh: Mesh, sidecar_port: int) -> int:
    """The serial of the leaf a sidecar presents to a new mesh client right now."""
    from tether.sdk.tls import client_context, Material

    leaf = mesh.api.get("/v1/agent/connect/ca/leaf/probe-client").json()
    roots = mesh.api.get("/v1/agent/connect/ca/roots").json()
    ctx = client_context(Material(leaf["CertPEM"], leaf["PrivateKeyPEM"], "".join(r["RootCert"] for r in roots["Roots"]),
                                  leaf["ServiceURI"], roots["TrustDomain"]))
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", sidecar_port), timeout=5)) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(True)).serial_number


def test_root_rotation_under_live_traffic(mesh):
    app = mesh.app()
    db_sidecar = mesh.register("rotdb", app.port)
    up = mesh.port()
    mesh.register("rotweb", 1, upstreams=[{"destination_name": "rotdb", "local_bind_port": up}])
    mesh.ready("rotweb")
    mesh.healthy("rotdb")
    mesh.flowing(up)
    streams = [open_stream(up) for _ in range(4)]
    before = presented_serial(mesh, db_sidecar)
    old_root = mesh.api.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"]

    config = mesh.api.get("/v1/connect/ca/configuration").json()
    mesh.api.put("/v1/connect/ca/configuration",
                 json={"Provider": config["Provider"], "Config": {"RotateNow": True}}).raise_for_status()
    new_root = wait_for("a new active root", lambda: (
        lambda r: r if r != old_root else None)(mesh.api.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"]))

    # New handshakes use the re-issued leaf, signed by the new root ...
    current = int(mesh.api.get("/v1/agent/connect/ca/leaf/rotdb").json()["SerialNumber"].replace(":", ""), 16)
    wait_for("rotdb's sidecar to present its new leaf", lambda: presented_serial(mesh, db_sidecar) == current != before)
    assert new_root != old_root
    # ... connections opened before the rotation keep working ...
    for s in streams:
        assert still_open(s), "a connection opened before the rotation was dropped"
        s.close()
    # ... and new connections through both sidecars work with the new leaves.
    assert wait_for("a new connection after the rotation", lambda: roundtrip(up, b"after") == b"after")


def test_intention_flip_closes_only_the_denied_sources_connections(mesh):
    app = mesh.app()
    mesh.register("vault", app.port)
    ups = {}
    for name in ("alpha", "beta"):
        ups[name] = mesh.port()
        mesh.register(name, 1, upstreams=[{"destination_name": "vault", "local_bind_port": ups[name]}])
        mesh.ready(name)
    mesh.healthy("vault")
    mesh.flowing(ups["alpha"])
    mesh.flowing(ups["beta"])
    alpha = [open_stream(ups["alpha"]) for _ in range(2)]
    beta = [open_stream(ups["beta"]) for _ in range(2)]

    mesh.intention("beta", "vault", "deny")
    for s in beta:
        s.settimeout(5)
        wait_for("beta's open connection to be closed", lambda s=s: not still_open(s))
    rec = mesh.wait_log("the termination line", destination="vault", result="authz-terminated")
    assert rec["source"].endswith("/svc/beta") and "beta -> vault (deny" in rec["reason"]
    for s in alpha:
        assert still_open(s), "an allowed source's connection was closed"
    assert roundtrip(ups["beta"], b"new") == b""  # and new ones are refused
    assert roundtrip(ups["alpha"], b"new") == b"new"
    for s in alpha + beta:
        s.close()


def test_registration_changes_apply_without_a_restart(mesh):
    a, b = mesh.app(), mesh.app()
    mesh.register("first", a.port)
    mesh.register("second", b.port)
    up1, up2 = mesh.port(), mesh.port()
    sidecar = mesh.register("client", 1, upstreams=[{"destination_name": "first", "local_bind_port": up1}])
    ready = mesh.ready("client")
    mesh.healthy("first")
    mesh.healthy("second")
    mesh.flowing(up1)
    held = open_stream(up1)
    mark = len(mesh.agent.log)

    # Same registration, the upstream list changed: `first` removed, `second` added.
    assert mesh.register("client", 1, upstreams=[{"destination_name": "second", "local_bind_port": up2}]) == sidecar
    assert wait_for("the new upstream listener", lambda: roundtrip(up2, b"two") == b"two")
    wait_for("the removed upstream's listener to close", lambda: _refused(up1))
    assert still_open(held), "a connection through a removed upstream was cut"
    held.close()
    assert process_alive(int(ready["pid"]))
    assert not [line for line in mesh.agent.log[mark:] if "READY" in line and "service=client" in line]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False

