"""The sans-io ClientHello parser (core/clienthello.py) against real ClientHellos that
Python's ssl module produces over memory BIOs, re-fragmented, truncated and fuzzed."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.clienthello import MAX_RECORD_PAYLOAD, ClientHello, parse_client_hello

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def real_client_hello(version: ssl.TLSVersion, server_hostname: str | None = "api.example.com",
                      alpn: list[str] | None = None) -> bytes:
    """The bytes an OpenSSL client sends first: run its handshake into a memory BIO."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = version
    if server_hostname is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def refragment(records: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes carried in records of the given payload sizes (cycled)."""
    payload = bytearray()
    pos = 0
    while pos < len(records):  # strip the original record headers
        length = int.from_bytes(records[pos + 3:pos + 5], "big")
        payload += records[pos + 5:pos + 5 + length]
        pos += 5 + length
    out = bytearray()
    i = 0
    while payload:
        chunk, payload = payload[:sizes[i % len(sizes)]], payload[sizes[i % len(sizes)]:]
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        i += 1
    return bytes(out)


HELLOS = {
    "tls12": real_client_hello(TLS12, alpn=["h2", "http/1.1"]),
    "tls13": real_client_hello(TLS13, alpn=["postgresql"]),
    "tls13-no-sni": real_client_hello(TLS13, server_hostname=None),
}


def test_tls12_hello_gives_sni_alpn_and_version() -> None:
    hello = parse_client_hello(HELLOS["tls12"])
    assert hello == ClientHello(0x0303, "api.example.com", ("h2", "http/1.1"), ())


def test_tls13_hello_offers_tls13_in_supported_versions() -> None:
    hello = parse_client_hello(HELLOS["tls13"])
    assert hello is not None
    assert (hello.sni, hello.alpn, hello.legacy_version) == ("api.example.com", ("postgresql",), 0x0303)
    assert 0x0304 in hello.supported_versions


def test_hello_without_server_hostname_has_no_sni() -> None:
    hello = parse_client_hello(HELLOS["tls13-no-sni"])
    assert hello is not None and hello.sni is None and hello.alpn == ()


@pytest.mark.parametrize("name", sorted(HELLOS))
def test_every_truncated_prefix_needs_more_bytes(name: str) -> None:
    data = HELLOS[name]
    assert all(parse_client_hello(data[:k]) is None for k in range(len(data)))
    assert parse_client_hello(data) is not None


@pytest.mark.parametrize("sizes", [[1], [7, 3], [100], [MAX_RECORD_PAYLOAD]])
@pytest.mark.parametrize("name", ["tls12", "tls13"])
def test_hello_split_across_records_parses_the_same(name: str, sizes: list[int]) -> None:
    split = refragment(HELLOS[name], sizes)
    assert parse_client_hello(split) == parse_client_hello(HELLOS[name])
    step = max(1, len(split) // 50)  # a sample of prefixes keeps this fast
    assert all(parse_client_hello(split[:k]) is None for k in range(0, len(split), step))


def test_bytes_after_the_hello_are_ignored() -> None:
    assert parse_client_hello(HELLOS["tls13"] + b"\x14\x03\x03\x00\x01\x01") == parse_client_hello(HELLOS["tls13"])


def test_long_sni_and_many_alpn_names() -> None:
    host = ".".join(["a" * 60] * 4)
    data = real_client_hello(TLS13, server_hostname=host, alpn=[f"p{i}" for i in range(40)])
    hello = parse_client_hello(data)
    assert hello is not None and hello.sni == host and len(hello.alpn) == 40


@pytest.mark.parametrize(("data", "says"), [
    (b"G", "content type"),  # plaintext is told apart after one byte
    (b"GET / HTTP/1.1\r\n", "content type"),
    (b"\x17\x03\x03\x00\x10", "content type"),  # application data
    (b"\x16\x02", "version major"),
    (b"\x16\x03\x09", "record version"),
    (b"\x16\x03\x01\x00\x00", "empty handshake record"),
    (b"\x16\x03\x01" + (MAX_RECORD_PAYLOAD + 1).to_bytes(2, "big"), r"2\^14"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x30", "not ClientHello"),  # a ServerHello
    (b"\x16\x03\x01\x00\x04\x01\x00\x00\x05", "too short"),
    (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "exceeds"),
    (b"\x80\x2e\x01\x00\x02", "content type"),  # SSLv2-style hello
])
def test_noise_is_a_value_error_naming_the_problem(data: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_client_hello(data)


def test_interleaved_non_handshake_record_is_refused() -> None:
    data = refragment(HELLOS["tls12"], [50])
    with pytest.raises(ValueError, match="content type"):
        parse_client_hello(data[:55] + b"\x15\x03\x03\x00\x02\x02\x28" + data[55:])


def _outcome(data: bytes) -> object:
    try:
        return parse_client_hello(data)
    except ValueError:
        return "ValueError"


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_give_a_value_none_or_valueerror(data: bytes) -> None:
    result = _outcome(data)
    assert result is None or result == "ValueError" or isinstance(result, ClientHello)


@settings(max_examples=300)
@given(st.sampled_from(sorted(HELLOS)), st.data())
def test_mutated_real_hellos_only_give_a_value_none_or_valueerror(name: str, data: st.DataObject) -> None:
    raw = bytearray(HELLOS[name])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 40))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=40))
        if not raw:
            break
    result = _outcome(bytes(raw))
    assert result is None or result == "ValueError" or isinstance(result, ClientHello)


@given(st.sampled_from(["tls12", "tls13"]), st.lists(st.integers(1, 300), min_size=1, max_size=5))
def test_any_record_split_parses_the_same(name: str, sizes: list[int]) -> None:
    assert parse_client_hello(refragment(HELLOS[name], sizes)) == parse_client_hello(HELLOS[name])
