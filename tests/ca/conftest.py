"""Fixtures for the CA tests: the clock, trust domains, hand-built external CAs,
and a real OpenSSL mutual-TLS handshake over memory BIOs (the proxy relies on OpenSSL
accepting Tether's chains, so these tests ask OpenSSL itself, not cryptography)."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from ca_testkit import MAX_PUMPS, NOW, ExternalPki, Identity, make_ca_cert, write_private

from tether.ca import x509 as tx
from tether.ca.builtin import BuiltinCA
from tether.core.spiffe import SpiffeId, service_id


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture
def trust_domain() -> str:
    return f"{uuid.uuid4()}.tether"


@pytest.fixture
def builtin(trust_domain: str) -> BuiltinCA:
    return BuiltinCA.generate(trust_domain, NOW)


@pytest.fixture
def web_id(trust_domain: str) -> SpiffeId:
    return service_id(trust_domain, "dc1", "web")


@pytest.fixture
def db_id(trust_domain: str) -> SpiffeId:
    return service_id(trust_domain, "dc1", "db")


@pytest.fixture
def external_pki() -> ExternalPki:
    root_key = tx.generate_private_key()
    root = make_ca_cert("Example Corp Root CA", root_key, not_after=NOW + dt.timedelta(days=3650))
    inter_key = tx.generate_private_key()
    inter = make_ca_cert("Example Corp Mesh Intermediate", inter_key, issuer_cert=root, issuer_key=root_key, path_length=1)
    return ExternalPki(root, root_key, inter, inter_key)


HandshakeFn = Callable[..., str | None]


@pytest.fixture
def tls_handshake(tmp_path: Path) -> HandshakeFn:
    """mTLS handshake between two OpenSSL endpoints; returns None on success or the error text.

    Each side presents its Identity and trusts exactly the root PEMs it is given.
    Hostname checks are off: the mesh authorises by SPIFFE ID after verification.
    """
    counter = iter(range(1_000_000))

    def context(side: int, identity: Identity, trusted: Sequence[str], server: bool) -> ssl.SSLContext:
        n = next(counter)
        cert_file, key_file = tmp_path / f"chain{n}.pem", tmp_path / f"key{n}.pem"
        cert_file.write_text(identity.chain_pem)
        write_private(key_file, identity.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(cadata="".join(trusted))
        return ctx

    def run(client: Identity, client_trusts: Sequence[str], server: Identity, server_trusts: Sequence[str]) -> str | None:
        s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        srv = context(0, server, server_trusts, True).wrap_bio(s_in, s_out, server_side=True)
        cli = context(1, client, client_trusts, False).wrap_bio(c_in, c_out, server_hostname="mesh.invalid")
        done = {"client": False, "server": False}
        for _ in range(MAX_PUMPS):
            for name, end in (("client", cli), ("server", srv)):
                if done[name]:
                    continue
                try:
                    end.do_handshake()
                    done[name] = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except ssl.SSLError as exc:
                    return f"{name}: {exc}"
            c_in.write(s_out.read())
            s_in.write(c_out.read())
            if all(done.values()):
                break
        else:
            return "handshake did not finish"
        # In TLS 1.3 the server judges the client's certificate after the client thinks it is
        # done; an application-data round trip surfaces any rejection on both ends.
        try:
            cli.write(b"ping")
            s_in.write(c_out.read())
            assert srv.read(4) == b"ping"
            srv.write(b"pong")
            c_in.write(s_out.read())
            assert cli.read(4) == b"pong"
        except ssl.SSLError as exc:
            return f"after handshake: {exc}"
        return None

    return run
