"""Linkerd's `unauthenticated: true` for real (issue 11): the inbound sidecar detects per
connection whether the client speaks TLS. A ClientHello takes the mutual-TLS path; anything
else is a plaintext client, admitted only when an `unauthenticated` rule allows its address.

One table drives all three deciders on the same inputs: `decide` on the agent's state (what
the proxy runs), `tether policy explain` (a user's question), and the real sidecar.
Everything is on loopback: "inside / outside the CIDR" varies the rule's network, not the
client's address.
"""

from __future__ import annotations

import socket
import ssl
import textwrap

import pytest

from proxy_kit import Mesh, roundtrip, wait_for
from tether.core.authz import Source, decide
from tether.core.policy_yaml import snapshot_from_state
from tether.core.spiffe import SpiffeId
from tether.testing.agent import run_cli

POLICY = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {{name: web-http, namespace: emojivoto}}
spec: {{podSelector: {{matchLabels: {{app: web-svc}}}}, port: {port}, proxyProtocol: HTTP/1}}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {{name: web-public, namespace: emojivoto}}
spec:
  server: {{name: web-http}}
  client:
    unauthenticated: true
    networks: [{{cidr: "{cidr}"}}]
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {{name: web-voter, namespace: emojivoto}}
spec:
  server: {{name: web-http}}
  client: {{meshTLS: {{serviceAccounts: [{{name: voter}}]}}}}
"""

INSIDE, OUTSIDE = "127.0.0.0/8", "192.0.2.0/24"  # the rule's network, relative to a loopback client
#: (the rule's network, client, allowed). "tls-no-cert" never reaches a decision: the
#: handshake requires a client certificate.
TABLE = [
    (INSIDE, "mesh", True),
    (INSIDE, "plaintext", True),
    (INSIDE, "tls-no-cert", False),
    (OUTSIDE, "mesh", True),
    (OUTSIDE, "plaintext", False),
    (OUTSIDE, "tls-no-cert", False),
]


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def tls_without_certificate(port: int) -> bytes:
    """What a TLS client without a certificate gets back for a ping (b'' when refused)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(b"ping")
            return s.recv(64)
    except (ssl.SSLError, OSError):
        return b""


def proxy_admits(client: str, public: int, upstream: int) -> bool:
    if client == "mesh":
        return roundtrip(upstream, b"ping") == b"ping"
    if client == "plaintext":
        return roundtrip(public, b"ping") == b"ping"
    return tls_without_certificate(public) == b"ping"


def decided(mesh: Mesh, client: str, port: int) -> bool | None:
    state = mesh.api.get("/v1/agent/connect/authz-snapshot").json()
    snap = snapshot_from_state(state, state["TrustDomain"])
    if client == "tls-no-cert":
        return None
    source = (Source(SpiffeId(snap.trust_domain, "emojivoto", "dc1", "voter"), "127.0.0.1") if client == "mesh"
              else Source(None, "127.0.0.1", plaintext=True))
    return decide(snap, source, "web-svc", port).allowed


def explained(mesh: Mesh, client: str, port: int) -> bool | None:
    if client == "tls-no-cert":
        return None
    r = run_cli("policy", "explain", "emojivoto/voter" if client == "mesh" else "-", f"web-svc:{port}", "-addr", "127.0.0.1",
                addr=mesh.agent.url)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode == 0


def test_one_table_drives_decide_explain_and_the_sidecar(mesh):
    app = mesh.app()
    public = mesh.register("web-svc", app.port, namespace="emojivoto")  # the policy's namespace
    upstream = mesh.port()
    mesh.register("voter", 1, namespace="emojivoto",
                  upstreams=[{"destination_name": "web-svc", "local_bind_port": upstream}])
    mesh.healthy("web-svc", namespace="emojivoto")
    for cidr in (INSIDE, OUTSIDE):
        r = mesh.api.put("/v1/tether/policy", content=textwrap.dedent(POLICY.format(port=app.port, cidr=cidr)).encode())
        assert r.status_code == 200, r.text
        rows = [(client, allowed) for net, client, allowed in TABLE if net == cidr]
        # The sidecar follows the agent's state: wait until its plaintext answer is the new one.
        want_plain = dict(rows)["plaintext"]
        wait_for(f"the sidecar to apply web-public from {cidr}", lambda: proxy_admits("plaintext", public, upstream) is want_plain)
        for client, allowed in rows:
            assert decided(mesh, client, app.port) in (allowed, None), (cidr, client)
            assert explained(mesh, client, app.port) in (allowed, None), (cidr, client)
            assert proxy_admits(client, public, upstream) is allowed, (cidr, client)
    refused = mesh.wait_log("the plaintext refusal", direction="inbound", destination="web-svc", result="denied")
    assert "plaintext client (no TLS)" in refused["reason"] and "plaintext" in refused["flags"]
    admitted = mesh.access_logs(direction="inbound", destination="web-svc", result="allowed")
    assert any(rec["reason"].startswith("authorization web-public") and rec["source"] is None for rec in admitted)
    no_cert = mesh.access_logs(direction="inbound", destination="web-svc", result="handshake-failure")
    assert any("no-client-cert" in rec["reason"] for rec in no_cert)
