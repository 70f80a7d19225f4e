"""The Linkerd seed end to end with real sidecars (issue 11): Linkerd's published emojivoto
policy file (tests/corpus/linkerd/emojivoto-policy.yml, named ports and label selectors
included) applied as is with `tether apply -f`: web -> emoji and web -> voting allowed,
vote-bot -> voting denied, and `web-public` admits a plaintext client from loopback. The
services are registered in namespace `emojivoto`, as the file's objects are; the namespace
jail (a Server for every pod of the namespace, authorizing `*.emojivoto.serviceaccount...`)
denies a caller of another namespace, and a Namespace's default inbound policy covers its
services."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy_kit import Mesh, roundtrip, wait_for
from tether.testing.agent import run_cli

POLICY_FILE = Path(__file__).resolve().parents[1] / "corpus" / "linkerd" / "emojivoto-policy.yml"
NS = "emojivoto"
#: The namespace jail: every pod of emojivoto, on its `jail` port, admits emojivoto's own
#: identities only (Linkerd's `podSelector: {}` and `*.<ns>.serviceaccount...`).
JAIL = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {namespace: emojivoto, name: jail}
spec: {podSelector: {}, port: jail}
---
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {namespace: emojivoto, name: jail-emojivoto-only}
spec:
  server: {name: jail}
  client: {meshTLS: {identities: ["*.emojivoto.serviceaccount.identity.linkerd.cluster.local"]}}
"""
#: Linkerd's per-namespace default inbound policy: no Server needed.
LOCKED_NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata: {name: outside, annotations: {config.linkerd.io/default-inbound-policy: deny}}
"""


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def refused(port: int) -> bool:
    return roundtrip(port, b"ping") == b""


def test_the_published_emojivoto_policy_applies_as_is_and_holds(mesh):
    emoji, voting, web_svc = mesh.app(), mesh.app(), mesh.app()
    mesh.register("emoji-svc", emoji.port, meta={"tether-port-grpc": str(emoji.port)}, namespace=NS)
    mesh.register("voting-svc", voting.port, meta={"tether-port-grpc": str(voting.port)}, namespace=NS)
    web_public = mesh.register("web-svc", web_svc.port, meta={"tether-port-http": str(web_svc.port)}, namespace=NS)
    to_emoji, to_voting, bot_to_voting = mesh.port(), mesh.port(), mesh.port()
    mesh.register("web", 1, namespace=NS, upstreams=[{"destination_name": "emoji-svc", "local_bind_port": to_emoji},
                                                     {"destination_name": "voting-svc", "local_bind_port": to_voting}])
    mesh.register("vote-bot", 1, namespace=NS,
                  upstreams=[{"destination_name": "voting-svc", "local_bind_port": bot_to_voting}])
    for name in ("emoji-svc", "voting-svc", "web-svc"):
        mesh.healthy(name, namespace=NS)
    mesh.flowing(bot_to_voting)  # before the policy: the dev agent's defaults allow

    r = run_cli("apply", "-f", str(POLICY_FILE), addr=mesh.agent.url)
    assert r.returncode == 0, r.stderr
    # Servers whose named ports no registration defines are named, not silently dropped.
    assert "warning: Server emojivoto/prom: spec.port 'prom': no instance of the selected services" in r.stderr
    assert "warning: Server emojivoto/admin: spec.port 'linkerd-admin'" in r.stderr

    wait_for("vote-bot -> voting to be denied by the policy", lambda: refused(bot_to_voting))
    denial = mesh.wait_log("voting's refusal of vote-bot", direction="inbound", destination="voting-svc", result="denied")
    assert "server policy voting-grpc" in denial["reason"]
    assert roundtrip(to_voting, b"vote") == b"vote"  # internal-grpc (a label selector) admits web
    assert roundtrip(to_emoji, b"emoji") == b"emoji"
    assert roundtrip(web_public, b"GET / HTTP/1.1\r\n\r\n") == b"GET / HTTP/1.1\r\n\r\n"  # plaintext, web-public
    admitted = mesh.wait_log("web-public's plaintext admission", direction="inbound", destination="web-svc",
                             result="allowed")
    assert admitted["source"] is None and admitted["reason"].startswith("authorization web-public")


def test_the_namespace_jail_denies_a_caller_of_another_namespace(mesh, tmp_path):
    tally = mesh.app()
    mesh.register("tally", tally.port, namespace=NS, meta={"tether-port-jail": str(tally.port)})
    outpost = mesh.app()
    mesh.register("outpost", outpost.port, namespace="outside")
    insider_to_tally, insider_to_outpost, intruder_to_tally = mesh.port(), mesh.port(), mesh.port()
    mesh.register("insider", 1, namespace=NS, upstreams=[
        {"destination_name": "tally", "local_bind_port": insider_to_tally},
        {"destination_name": "outpost", "destination_namespace": "outside", "local_bind_port": insider_to_outpost}])
    mesh.register("intruder", 1, namespace="outside", upstreams=[
        {"destination_name": "tally", "destination_namespace": NS, "local_bind_port": intruder_to_tally}])
    mesh.healthy("tally", namespace=NS)
    mesh.healthy("outpost", namespace="outside")
    for port in (insider_to_tally, insider_to_outpost, intruder_to_tally):
        mesh.flowing(port)  # before the policy: the dev agent's defaults allow, across namespaces too

    (tmp_path / "jail.yaml").write_text(JAIL)
    r = run_cli("apply", "-f", str(tmp_path / "jail.yaml"), addr=mesh.agent.url)
    assert r.returncode == 0, r.stderr
    wait_for("the intruder to be jailed out", lambda: refused(intruder_to_tally))
    denial = mesh.wait_log("tally's refusal of the intruder", direction="inbound", destination="tally", result="denied")
    assert "/ns/outside/" in denial["source"] and "server policy jail" in denial["reason"]
    assert roundtrip(insider_to_tally, b"tally") == b"tally"  # a caller of emojivoto itself

    (tmp_path / "locked.yaml").write_text(LOCKED_NAMESPACE)
    r = run_cli("apply", "-f", str(tmp_path / "locked.yaml"), addr=mesh.agent.url)
    assert r.returncode == 0, r.stderr
    wait_for("outside's default inbound policy to deny", lambda: refused(insider_to_outpost))
    denial = mesh.wait_log("outpost's refusal", direction="inbound", destination="outpost", result="denied")
    assert "server policy namespace.outside" in denial["reason"]
