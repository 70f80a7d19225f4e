"""A real OpenSSL mutual-TLS handshake between two in-memory endpoints, for tests.

Both ends run in this thread over MemoryBIO pairs; each presents its own chain and trusts
exactly the roots it is given. Host names play no part (the mesh authorises by SPIFFE ID
after chain verification). Used to prove that certificates Tether issues are accepted,
or refused, by OpenSSL itself, which is what the proxies rely on.
"""

from __future__ import annotations

import itertools
import os
import ssl
import tempfile
from typing import Protocol, Sequence

MAX_PUMPS = 20  # TLS needs a handful of flights; this only guards against a hang
_names = itertools.count()


class Presents(Protocol):
    chain_pem: str  # the leaf, then any intermediates to send along
    key_pem: str


def _context(identity: Presents, trusted: Sequence[str], server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    with tempfile.TemporaryDirectory(prefix="tether-test-tls-") as private:  # 0700
        n = next(_names)
        cert, key = os.path.join(private, f"chain{n}.pem"), os.path.join(private, f"key{n}.pem")
        with open(cert, "w") as fh:
            fh.write(identity.chain_pem)
        with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(identity.key_pem)
        ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata="".join(trusted))
    return ctx


def mtls_handshake(client: Presents, client_trusts: Sequence[str],
                   server: Presents, server_trusts: Sequence[str]) -> str | None:
    """None when both ends accept each other, else the first error as text."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = _context(server, server_trusts, True).wrap_bio(s_in, s_out, server_side=True)
    cli = _context(client, client_trusts, False).wrap_bio(c_in, c_out, server_hostname="mesh.invalid")
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
        if srv.read(4) != b"ping":
            return "after handshake: the server did not receive the client's data"
        srv.write(b"pong")
        c_in.write(s_out.read())
        if cli.read(4) != b"pong":
            return "after handshake: the client did not receive the server's data"
    except ssl.SSLError as exc:
        return f"after handshake: {exc}"
    return None
