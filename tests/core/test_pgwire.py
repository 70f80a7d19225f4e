"""PostgreSQL SSLRequest negotiation (core/pgwire.py): real libpq bytes from `psql`
against a local listener, a real TLS upgrade after 'S', protocol tables and fuzzing."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from tether.testing.deps import missing
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.pgwire import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    CancelReceived,
    ClientNegotiation,
    ContinuePlain,
    DirectTlsReceived,
    ReplyToClient,
    ServerNegotiation,
    StartTls,
    StartupReceived,
    TlsRefused,
    format_ssl_request,
)

SSL_REQUEST = (8).to_bytes(4, "big") + SSL_REQUEST_CODE.to_bytes(4, "big")
GSSENC_REQUEST = (8).to_bytes(4, "big") + GSSENC_REQUEST_CODE.to_bytes(4, "big")
TIMEOUT = 20.0


def startup_message(params: dict[str, str], version: tuple[int, int] = (3, 0)) -> bytes:
    """A StartupMessage built from the protocol documentation's layout."""
    body = (version[0] << 16 | version[1]).to_bytes(4, "big")
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return (len(body) + 4).to_bytes(4, "big") + body


def error_response(message: str) -> bytes:
    fields = b"SFATAL\0C28000\0M" + message.encode() + b"\0\0"
    return b"E" + (len(fields) + 4).to_bytes(4, "big") + fields


# ---------------------------------------------------------------- real psql


def run_psql_against_listener(conninfo: str) -> tuple[bytes, list[object], subprocess.CompletedProcess[bytes]]:
    """Run psql against a one-connection listener driven by ClientNegotiation.

    Returns the raw bytes psql sent, the negotiation events, and psql's result. The
    listener ends the session with a FATAL ErrorResponse so psql exits by itself.
    """
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        proc = subprocess.Popen(
            ["psql", "-X", "-w", "-c", "select 1",
             f"host=127.0.0.1 port={port} user=ratings dbname=orders application_name=ratings-app "
             f"connect_timeout=10 gssencmode=disable {conninfo}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                received, events, negotiation = bytearray(), [], ClientNegotiation()
                while not negotiation.done:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                    for event in negotiation.feed(chunk):
                        events.append(event)
                        if isinstance(event, ReplyToClient):
                            conn.sendall(event.data)
                if negotiation.done:
                    conn.sendall(error_response("tether test listener says goodbye"))
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return bytes(received), events, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


needs_psql = pytest.mark.skipif(shutil.which("psql") is None, reason=missing("psql (postgresql-client)"))


@needs_psql
def test_psql_sslmode_prefer_gets_n_and_continues_in_plaintext() -> None:
    received, events, result = run_psql_against_listener("sslmode=prefer")
    assert received[:8] == SSL_REQUEST  # libpq's first bytes are exactly the SSLRequest
    assert events[0] == ReplyToClient(b"N", "ssl")
    startup = events[1]
    assert isinstance(startup, StartupReceived) and startup.protocol == (3, 0)
    params = dict(startup.params)
    assert (params["user"], params["database"], params["application_name"]) == ("ratings", "orders", "ratings-app")
    assert received[8:] == startup.raw  # what we would forward is byte-for-byte what psql sent
    assert result.returncode != 0 and b"tether test listener says goodbye" in result.stderr


@needs_psql
def test_psql_sslmode_disable_sends_the_startup_message_first() -> None:
    received, events, result = run_psql_against_listener("sslmode=disable")
    assert len(events) == 1 and isinstance(events[0], StartupReceived)
    assert events[0].raw == received
    assert b"goodbye" in result.stderr


@needs_psql
def test_psql_sslmode_require_refuses_the_plaintext_hop() -> None:
    # Why docs/egress.md says: clients use sslmode=prefer or disable toward the sidecar.
    received, events, result = run_psql_against_listener("sslmode=require")
    assert received == SSL_REQUEST and events == [ReplyToClient(b"N", "ssl")]
    assert b"SSL" in result.stderr and result.returncode != 0


# ---------------------------------------------------------------- real TLS after 'S'


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def serve_fake_postgres(ca: trustme.CA, answer: bytes) -> tuple[socket.socket, threading.Thread, dict[str, bytes]]:
    """A listener that answers SSLRequest with `answer`, then (after 'S') reads the startup over TLS."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("db.example.test").configure_cert(ctx)
    seen: dict[str, bytes] = {}

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            seen["request"] = conn.recv(8, socket.MSG_WAITALL)
            conn.sendall(answer)
            if answer == b"S":
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    seen["startup"] = tls.recv(4096)
                    tls.sendall(error_response("over tls"))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return server, thread, seen


def test_server_side_upgrades_to_real_tls_after_s(ca: trustme.CA) -> None:
    server, thread, seen = serve_fake_postgres(ca, b"S")
    negotiation = ServerNegotiation()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    startup = startup_message({"user": "ratings", "database": "orders"})
    with server, socket.create_connection(server.getsockname(), timeout=TIMEOUT) as sock:
        sock.sendall(negotiation.request())
        event = None
        while event is None:
            event = negotiation.feed(sock.recv(4096))
        assert event == StartTls()
        with client_ctx.wrap_socket(sock, server_hostname="db.example.test") as tls:
            tls.sendall(startup)
            reply = tls.recv(4096)
        thread.join(TIMEOUT)
    assert seen["request"] == SSL_REQUEST == format_ssl_request()
    assert seen["startup"] == startup and b"over tls" in reply


def test_server_side_n_when_tls_is_required_is_a_clear_refusal(ca: trustme.CA) -> None:
    server, thread, _ = serve_fake_postgres(ca, b"N")
    with server, socket.create_connection(server.getsockname(), timeout=TIMEOUT) as sock:
        negotiation = ServerNegotiation(require_tls=True)
        sock.sendall(negotiation.request())
        event = negotiation.feed(sock.recv(4096))
        thread.join(TIMEOUT)
    assert isinstance(event, TlsRefused)
    assert "answered 'N'" in event.message and "tls.mode" in event.message


# ---------------------------------------------------------------- protocol tables


def test_server_answers_table() -> None:
    assert ServerNegotiation(require_tls=False).feed(b"N") == ContinuePlain()
    assert ServerNegotiation().feed(b"") is None
    refused = ServerNegotiation()
    response = error_response("unsupported frontend protocol 1234.5679\x07")
    assert refused.feed(response[:3]) is None
    event = refused.feed(response[3:])
    assert isinstance(event, TlsRefused) and "unsupported frontend protocol 1234.5679?" in event.message


@pytest.mark.parametrize(("answer", "says"), [
    (b"S\x16\x03\x03", "unexpected bytes after"),  # CVE-2021-23222: injected bytes before TLS
    (b"Nxyz", "unexpected bytes after"),
    (b"X", "not 'S', 'N'"),
    (b"E\x00\x00\x00\x02", "length"),
    (b"E\x00\x00\x00\x06AB", "not NUL-terminated"),
])
def test_server_noise_is_a_value_error(answer: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ServerNegotiation().feed(answer)


def test_server_bytes_after_the_answer_are_refused() -> None:
    negotiation = ServerNegotiation()
    assert negotiation.feed(b"S") == StartTls()
    with pytest.raises(ValueError, match="answered already"):
        negotiation.feed(b"\x16")


def test_gssenc_then_ssl_then_startup_fed_byte_by_byte() -> None:
    startup = startup_message({"user": "u", "database": "d"}, version=(3, 2))
    negotiation = ClientNegotiation()
    events = [e for b in GSSENC_REQUEST + SSL_REQUEST + startup for e in negotiation.feed(bytes([b]))]
    assert events == [ReplyToClient(b"N", "gssenc"), ReplyToClient(b"N", "ssl"),
                      StartupReceived(startup, (3, 2), (("user", "u"), ("database", "d")))]
    assert negotiation.done
    with pytest.raises(ValueError, match="finished"):
        negotiation.feed(b"Q")


def test_cancel_request_and_accept_ssl_mode() -> None:
    cancel = (16).to_bytes(4, "big") + CANCEL_REQUEST_CODE.to_bytes(4, "big") + (4242).to_bytes(4, "big") + b"k3y!"
    assert ClientNegotiation().feed(cancel) == [CancelReceived(cancel, 4242, b"k3y!")]
    accepting = ClientNegotiation(accept_ssl=True)
    assert accepting.feed(SSL_REQUEST) == [ReplyToClient(b"S", "ssl")]
    with pytest.raises(ValueError, match="plaintext bytes after SSLRequest"):  # CVE-2021-23214
        ClientNegotiation(accept_ssl=True).feed(SSL_REQUEST + b"\x00\x00")


def test_direct_tls_client_is_recognised() -> None:
    hello = b"\x16\x03\x01\x00\x05hello"
    assert ClientNegotiation().feed(hello) == [DirectTlsReceived(hello)]


@pytest.mark.parametrize(("data", "says"), [
    (b"\x00\x00\x00\x04", "outside 8.."),
    (b"\x00\x01\x00\x00", "outside 8.."),  # longer than PostgreSQL's own startup limit
    (b"\x00\x00\x00\x0c" + SSL_REQUEST_CODE.to_bytes(4, "big"), "always 8"),
    (b"\x00\x00\x00\x08" + (2 << 16).to_bytes(4, "big"), "protocol 2.0"),
    (b"\x00\x00\x00\x08" + CANCEL_REQUEST_CODE.to_bytes(4, "big"), "CancelRequest"),
    (startup_message({"user": "u"})[:-1] + b"x", "NUL-terminated"),
    (b"\x00\x00\x00\x0b" + (3 << 16).to_bytes(4, "big") + b"u\0\0", "name/value"),
    (SSL_REQUEST + SSL_REQUEST, "second SSL"),
])
def test_client_noise_is_a_value_error(data: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ClientNegotiation().feed(data)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=6), st.booleans(), st.booleans())
def test_client_side_never_raises_anything_but_valueerror(chunks: list[bytes], accept_ssl: bool,
                                                          after_ssl: bool) -> None:
    negotiation = ClientNegotiation(accept_ssl=accept_ssl)
    try:
        for chunk in [SSL_REQUEST, *chunks] if after_ssl else chunks:
            negotiation.feed(chunk)
    except ValueError:
        pass


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=20), max_size=4), st.booleans())
def test_server_side_never_raises_anything_but_valueerror(chunks: list[bytes], require_tls: bool) -> None:
    negotiation = ServerNegotiation(require_tls=require_tls)
    try:
        for chunk in chunks:
            negotiation.feed(chunk)
    except ValueError:
        pass


@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8), st.text(max_size=12).filter(
    lambda v: "\0" not in v), max_size=5), st.lists(st.integers(1, 30), min_size=1, max_size=6))
def test_any_chunking_gives_the_same_events(params: dict[str, str], cuts: list[int]) -> None:
    data = SSL_REQUEST + startup_message(params)
    whole = ClientNegotiation().feed(data)
    negotiation, events, pos, i = ClientNegotiation(), [], 0, 0
    while pos < len(data):
        events += negotiation.feed(data[pos:pos + cuts[i % len(cuts)]])
        pos += cuts[i % len(cuts)]
        i += 1
    assert events == whole
    assert dict(whole[1].params) == params  # type: ignore[union-attr]
