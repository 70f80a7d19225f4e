"""The Linkerd seed end to end with real sidecars (issue 11): Linkerd's published emojivoto
policy file (tests/corpus/linkerd/emojivoto-policy.yml, named ports and label selectors
included) applied as is with `tether apply -f`: web -> emoji and web -> voting allowed,
vote-bot -> voting denied, and `web-public` admits a plaintext client from loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy_kit import Mesh, roundtrip, wait_for
from tether.testing.agent import run_cli

POLICY_FILE = Path(__file__).resolve().parents[1] / "corpus" / "linkerd" / "emojivoto-policy.yml"


@pytest.fixture(scope="module")
def mesh():
    m = Mesh.start()
    yield m
    m.close()


def refused(port: int) -> bool:
    return roundtrip(port, b"ping") == b""


def test_the_published_emojivoto_policy_applies_as_is_and_holds(mesh):
    emoji, voting, web_svc = mesh.app(), mesh.app(), mesh.app()
    mesh.register("emoji-svc", emoji.port, meta={"tether-port-grpc": str(emoji.port)})
    mesh.register("voting-svc", voting.port, meta={"tether-port-grpc": str(voting.port)})
    web_public = mesh.register("web-svc", web_svc.port, meta={"tether-port-http": str(web_svc.port)})
    to_emoji, to_voting, bot_to_voting = mesh.port(), mesh.port(), mesh.port()
    mesh.register("web", 1, upstreams=[{"destination_name": "emoji-svc", "local_bind_port": to_emoji},
                                       {"destination_name": "voting-svc", "local_bind_port": to_voting}])
    mesh.register("vote-bot", 1, upstreams=[{"destination_name": "voting-svc", "local_bind_port": bot_to_voting}])
    for name in ("emoji-svc", "voting-svc", "web-svc"):
        mesh.healthy(name)
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
