"""`tether ca ...` as a user runs it (subprocesses), and the CA across a server and a node agent."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import time

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tether.ca import x509 as tx
from tether.core.chain import match_chain
from tether.testing.agent import start_tether
from tether.testing.agent import run_cli as tether


@pytest.fixture(scope="module")
def addr(dev_agent) -> str:
    return dev_agent.addr


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_roots_table_and_pem(addr):
    table = tether("ca", "roots", addr=addr)
    assert table.returncode == 0, table.stderr
    assert "Trust domain:" in table.stdout and ".tether" in table.stdout and "yes" in table.stdout
    pem = tether("ca", "roots", "-pem", addr=addr)
    served = httpx.get(f"http://{addr}/v1/agent/connect/ca/roots").json()
    assert pem.stdout == "".join(r["RootCert"] for r in served["Roots"])
    detailed = tether("ca", "roots", "-detailed", addr=addr)
    assert json.loads(detailed.stdout)["ActiveRootID"] == served["ActiveRootID"]


def test_get_and_set_config(addr, tmp_path):
    config = json.loads(tether("ca", "get-config", addr=addr).stdout)
    assert config["Provider"] == "consul" and "PRIVATE KEY" not in json.dumps(config)
    good = tmp_path / "ttl.json"
    good.write_text(json.dumps({"Config": {"LeafCertTTL": "24h"}}))
    result = tether("ca", "set-config", "-config-file", str(good), addr=addr)
    assert result.returncode == 0 and "Configuration updated!" in result.stdout, result.stderr
    assert json.loads(tether("ca", "get-config", addr=addr).stdout)["Config"]["LeafCertTTL"] == "24h0m0s"
    # From standard input, refused by the server: one line, exit 2, nothing changed.
    bad = tether("ca", "set-config", "-config-file", "-", addr=addr, stdin='{"Config": {"LeafCertTTL": "10s"}}')
    assert "out of range" in one_line_error(bad)
    assert json.loads(tether("ca", "get-config", addr=addr).stdout)["Config"]["LeafCertTTL"] == "24h0m0s"
    (tmp_path / "bad.json").write_text("{not json")
    assert "not valid JSON" in one_line_error(tether("ca", "set-config", "-config-file", str(tmp_path / "bad.json"),
                                                     addr=addr))
    assert "cannot read" in one_line_error(tether("ca", "set-config", "-config-file", str(tmp_path / "none.json"),
                                                  addr=addr))
    assert "config-file" in one_line_error(tether("ca", "set-config", addr=addr))


def test_leaf_without_out_dir_shows_the_identity_and_writes_nothing(addr, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tether.cli.main", "ca", "leaf", "web", "-http-addr", addr],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("/ns/default/dc/dc1/svc/web")
    assert "PRIVATE KEY" not in result.stdout and list(tmp_path.iterdir()) == []


def test_leaf_writes_files_and_inspect_reads_them(addr, tmp_path):
    out = tmp_path / "tls"
    result = tether("ca", "leaf", "web", "-out-dir", str(out), addr=addr)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(out / "key.pem").st_mode) == 0o600
    certs = tx.load_certificates_pem((out / "cert.pem").read_text())
    assert certs[0].public_key() == tx.load_private_key_pem((out / "key.pem").read_text()).public_key()
    roots = tx.load_certificates_pem((out / "roots.pem").read_text())
    match_chain(certs[0], certs[1:], roots, now=dt.datetime.now(dt.timezone.utc))
    # Running it again replaces the files and keeps the key private.
    assert tether("ca", "leaf", "web", "-out-dir", str(out), addr=addr).returncode == 0
    assert stat.S_IMODE(os.stat(out / "key.pem").st_mode) == 0o600

    shown = tether("ca", "inspect", str(out / "cert.pem"))
    assert shown.returncode == 0, shown.stderr
    assert "/ns/default/dc/dc1/svc/web" in shown.stdout and "expires in" in shown.stdout
    assert "issuer chain" in shown.stdout
    verified = tether("ca", "inspect", str(out / "cert.pem"), "-roots", str(out / "roots.pem"))
    assert verified.returncode == 0 and "verifies" in verified.stdout, verified.stdout
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(_self_signed_pem())
    refused = tether("ca", "inspect", str(out / "cert.pem"), "-roots", str(stranger))
    assert refused.returncode == 1 and "does NOT verify" in refused.stdout
    assert "no PEM certificate" in one_line_error(tether("ca", "inspect", str(out / "key.pem")))
    assert "cannot read" in one_line_error(tether("ca", "inspect", str(tmp_path / "missing.pem")))
    assert "service name" in one_line_error(tether("ca", "leaf", "bad_name", "-out-dir", str(out), addr=addr))


def test_every_command_has_help_with_an_example():
    from typer.testing import CliRunner

    from tether.cli.main import build_app

    app = build_app()
    for command in ("roots", "get-config", "set-config", "leaf", "inspect"):  # in-process: help needs no agent
        result = CliRunner().invoke(app, ["ca", command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, command


def test_unreachable_agent_is_one_line_exit_2(tmp_path):
    result = tether("ca", "roots", addr="127.0.0.1:1")
    assert "cannot reach" in one_line_error(result)


def test_server_and_node_agent_sign_and_follow_rotation(tmp_path):
    """The node agent gets leaves signed over HTTP and re-issues them when the server rotates."""
    server = start_tether("server", "-data-dir", str(tmp_path / "server"))
    agent = start_tether("agent", "-server-addr", server.addr, "-node", "web-node")
    try:
        api = httpx.Client(base_url=agent.url, timeout=30)
        leaf = api.get("/v1/agent/connect/ca/leaf/web").json()
        assert "PRIVATE KEY" in leaf["PrivateKeyPEM"]
        rotate = tether("ca", "set-config", "-config-file", "-", addr=agent.addr,  # forwarded to the server
                        stdin='{"Provider": "consul", "Config": {"RotateNow": true}}')
        assert rotate.returncode == 0, rotate.stderr
        active = httpx.get(f"{server.url}/v1/connect/ca/roots").json()["ActiveRootID"]
        deadline = time.monotonic() + 30
        while api.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"] != active:
            assert time.monotonic() < deadline, "the node agent did not see the new root"
            time.sleep(0.05)
        renewed = api.get("/v1/agent/connect/ca/leaf/web").json()
        assert renewed["SerialNumber"] != leaf["SerialNumber"]
        assert renewed["CertPEM"].count("BEGIN CERTIFICATE") == 2  # leaf + cross-signed new root
        assert stat.S_IMODE(os.stat(tmp_path / "server" / "state.db").st_mode) == 0o600  # holds the CA key
    finally:
        agent.stop()
        assert server.stop() == 0  # no hang on the agents' open blocking queries


def _self_signed_pem() -> str:
    key = tx.generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stranger CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, tx.signature_hash(key)))
    return tx.format_cert_pem(cert)
