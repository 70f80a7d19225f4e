"""Small pure pieces: first-bytes and TLS error names, access-log formats, the standalone
config parser (every problem reported at once), and key handling in memory."""

from __future__ import annotations

import json
import os
import ssl

import pytest

from tether.core.errors import InvalidInput
from tether.proxy.accesslog import AccessLog, format_json, format_text, format_time
from tether.proxy.authz import StaticAllowList
from tether.proxy.config import parse_config
from tether.proxy.tls import HANDSHAKE_REASONS, TlsMaterial, build_contexts, classify_tls_error, match_first_bytes


@pytest.mark.parametrize("head,kind", [
    (b"\x16\x03\x01\x02", None), (b"", None), (b"GET /", "http-client"), (b"POST", "http-client"),
    (b"PRI * HTTP/2.0", "http-client"), (b"SSH-2.0", "plaintext-client"), (b"\x00\x00", "plaintext-client"),
])
def test_first_bytes(head, kind):
    assert match_first_bytes(head) == kind


def verify_error(code: int) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_code, e.verify_message = code, f"code {code}"
    return e


def ssl_error(reason: str) -> ssl.SSLError:
    e = ssl.SSLError(1, reason)
    e.reason = reason
    return e


@pytest.mark.parametrize("exc,reason", [
    (verify_error(10), "cert-expired"), (verify_error(9), "cert-not-yet-valid"), (verify_error(20), "unknown-ca"),
    (verify_error(19), "unknown-ca"), (verify_error(7), "bad-certificate"),
    (ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no-client-cert"), (ssl_error("HTTP_REQUEST"), "http-client"),
    (ssl_error("WRONG_VERSION_NUMBER"), "plaintext-client"), (ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "peer-rejected"),
    (ssl_error("SOMETHING_NEW"), "protocol-error"),
])
def test_tls_error_names(exc, reason):
    got, detail = classify_tls_error(exc)
    assert got == reason and got in HANDSHAKE_REASONS and detail


RECORD = {"start_time": format_time(1767225600.25), "duration_ms": 1.5, "direction": "inbound", "source": None,
          "destination": "db", "bytes_received": 3, "result": "denied", "reason": "no permit for web",
          "flags": ["audit", "retried"]}


def test_access_log_formats():
    assert RECORD["start_time"] == "2026-01-01T00:00:00.250Z"
    assert json.loads(format_json(RECORD)) == RECORD
    assert format_text(RECORD) == ('start_time=2026-01-01T00:00:00.250Z duration_ms=1.5 direction=inbound source=- '
                                   'destination=db bytes_received=3 result=denied reason="no permit for web" '
                                   'flags=audit,retried')


def test_access_log_without_loop_writes_through(tmp_path):
    path = tmp_path / "access.log"
    with open(path, "w") as f:
        log = AccessLog(f, "text")
        log.write(RECORD)
    assert path.read_text().count("\n") == 1
    with pytest.raises(ValueError):
        AccessLog(None, "xml")


def test_static_allow_list():
    allow = StaticAllowList(frozenset({"spiffe://td/ns/default/dc/dc1/svc/web"}), "db")
    assert allow("spiffe://td/ns/default/dc/dc1/svc/web", "127.0.0.1", 1).allowed
    assert not allow("spiffe://td/ns/default/dc/dc1/svc/api", "127.0.0.1", 1).allowed
    assert not allow(None, "127.0.0.1", 1).allowed
    assert StaticAllowList(frozenset({"*"}))("spiffe://td/x", "::1", 9).allowed


def test_material_problems_are_listed_together_and_keys_never_printed(pki):
    bad = TlsMaterial("x", "y", (), "web")
    with pytest.raises(InvalidInput) as err:
        build_contexts(bad)
    msg = str(err.value)
    assert all(k in msg for k in ("cert_pem", "key_pem", "roots_pem", "spiffe_id"))
    good = pki.material(pki.web)
    assert "PRIVATE" not in repr(good) and "BEGIN" not in repr(good)


def test_contexts_are_loaded_without_leaving_files(pki, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    before = len(os.listdir("/proc/self/fd"))
    ctx = build_contexts(pki.material(pki.web))
    assert ctx.server.verify_mode == ssl.CERT_REQUIRED and ctx.client.verify_mode == ssl.CERT_REQUIRED
    assert ctx.server.minimum_version == ssl.TLSVersion.TLSv1_2 and not ctx.client.check_hostname
    assert len(os.listdir("/proc/self/fd")) == before  # the memfd is closed again
    assert list(tmp_path.iterdir()) == []


def test_tempdir_fallback_is_private_and_cleaned(pki, tmp_path, monkeypatch):
    import tether.proxy.tls as tls
    monkeypatch.delattr(tls.os, "memfd_create", raising=False)
    monkeypatch.setattr(tls.tempfile, "tempdir", str(tmp_path))
    ctx = build_contexts(pki.material(pki.web))
    assert ctx.spiffe_id == pki.id("web") and list(tmp_path.iterdir()) == []


GOOD = {"tls": {"cert_file": "c.pem", "key_file": "k.pem", "roots_file": "r.pem",
                "spiffe_id": "spiffe://example.mesh/ns/default/dc/dc1/svc/web"},
        "inbound": {"service": "web", "bind": "127.0.0.1:21000", "local_app": "127.0.0.1:8080"},
        "upstreams": [{"name": "db", "bind": "127.0.0.1:9191", "spiffe_id": "spiffe://example.mesh/ns/default/dc/dc1/svc/db",
                       "instances": ["127.0.0.1:21001", {"address": "[::1]:21002", "spiffe_id": "spiffe://x/y"}],
                       "policy": "least_conn", "connect_timeout_ms": 250}],
        "allow": ["*"], "access_log": {"path": "access.log", "format": "text"}, "admin": "127.0.0.1:19000",
        "idle_timeout_ms": 30000}


def test_config_parses(tmp_path):
    cfg = parse_config(GOOD, base=tmp_path)
    assert cfg.tls.cert_file == tmp_path / "c.pem"
    assert cfg.inbound.bind_port == 21000 and cfg.inbound.local_app_port == 8080
    (up, instances), = cfg.upstreams
    assert up.policy == "least_conn" and up.connect_timeout == 0.25 and up.bind_host == "127.0.0.1"
    assert [(i.host, i.port, i.spiffe_id) for i in instances] == [("127.0.0.1", 21001, None), ("::1", 21002, "spiffe://x/y")]
    assert cfg.access_log_path == str(tmp_path / "access.log") and cfg.access_log_format == "text"
    assert cfg.admin == ("127.0.0.1", 19000) and cfg.idle_timeout == 30.0 and cfg.handshake_timeout == 10.0


def test_config_reports_every_problem_at_once():
    bad = {"tls": {"cert_file": "c", "key_file": 3, "roots_file": "r", "spiffe_id": "web", "colour": 1},
           "inbound": {"service": "web", "local_app": "nowhere"},
           "upstreams": [{"name": "db", "bind": "127.0.0.1:99999", "spiffe_id": "spiffe://x/db", "policy": "random"},
                         {"name": "db", "bind": "127.0.0.1:1", "spiffe_id": "spiffe://x/db"}],
           "allow": ["web"], "loop": "trio", "handshake_timeout_ms": -1, "extra": True}
    with pytest.raises(InvalidInput) as err:
        parse_config(bad)
    msg = str(err.value)
    for needle in ("config.tls.key_file: expected string", "config.tls.colour: unknown key",
                   "config.tls.spiffe_id: 'web' is not a spiffe:// URI", "config.inbound.local_app",
                   "config.upstreams[0].bind", "config.upstreams[0].policy", "config.allow[0]", "config.loop",
                   "config.handshake_timeout_ms", "config.extra: unknown key", "'db' appears more than once"):
        assert needle in msg, needle


from hypothesis import given, strategies as st  # noqa: E402

@pytest.mark.parametrize("ts, text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1767225600.25, "2026-01-01T00:00:00.250Z"),
    (951825599.999, "2000-02-29T11:59:59.999Z"),  # a leap day; milliseconds truncated, never rounded up
    (4102444799.5, "2099-12-31T23:59:59.500Z"),
])
def test_time_format_known_values(ts, text):
    assert format_time(ts) == text


@given(st.floats(min_value=0, max_value=4e9))
def test_time_format_reads_back_as_the_same_millisecond(ts):
    """Read back by the standard library's ISO parser: the instant, truncated to the millisecond."""
    import datetime as dt
    import math

    text = format_time(ts)
    assert len(text) == 24 and text.endswith("Z")
    back = dt.datetime.fromisoformat(text[:-1] + "+00:00")
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    assert (back - epoch) // dt.timedelta(milliseconds=1) == math.floor(ts * 1000)


def _mode(ctx) -> int:
    import ctypes
    from tether.proxy.tls import _libssl_handle
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    return _libssl_handle().SSL_CTX_ctrl(ptr, 33, 0, None)  # SSL_CTX_get_mode


def test_own_chain_is_not_rebuilt_per_handshake(pki, monkeypatch):
    ctx = build_contexts(pki.material(pki.web))
    assert _mode(ctx.server) & 0x8 and _mode(ctx.client) & 0x8  # SSL_MODE_NO_AUTO_CHAIN
    monkeypatch.setenv("TETHER_PROXY_AUTO_CHAIN", "1")
    assert not _mode(build_contexts(pki.material(pki.web)).server) & 0x8
