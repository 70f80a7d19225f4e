"""Four independent X.509 verifiers, each judging a batch of chains in one go.

Every verifier takes the same `MatrixCase`s and returns {case name: None when accepted,
else the verifier's own error text}:

- `openssl`: Python's `ssl` (the system OpenSSL, as HAProxy, nginx and the proxy use it),
  a mutual-TLS handshake in memory (tether.testing.tls).
- `pyca`: `cryptography.x509.verification`, the verifier pure-Python SPIFFE clients use. Its
  ClientVerifier, because a SPIFFE leaf has only a URI SAN and the ServerVerifier needs a
  DNS name or IP address to match.
- `go`: Go's crypto/x509 `Certificate.Verify`, for TLS server and client use
  (verifiers/verify_chains.go, built once per session).
- `node`: Node's `tls` with its own OpenSSL build, a mutual-TLS handshake over loopback
  (verifiers/verify_tls.js).

Batches keep the matrix fast: one Go and one Node process per test session.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ca_testkit import NOW, Identity
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tether.testing.tls import mtls_handshake

HERE = Path(__file__).parent / "verifiers"
GO_SOURCE = HERE / "verify_chains.go"
NODE_SCRIPT = HERE / "verify_tls.js"
#: A batch takes well under a second; the bound only turns a hang into a failure.
BATCH_TIMEOUT_S = 120

Verdicts = dict[str, "str | None"]


@dataclass(frozen=True)
class MatrixCase:
    name: str
    presents: Identity  # the leaf, the intermediates sent along, and its key
    trusts: tuple[str, ...]  # the root PEMs the verifying peer holds
    accept: bool


def openssl(cases: Sequence[MatrixCase]) -> Verdicts:
    return {c.name: mtls_handshake(c.presents, c.trusts, c.presents, c.trusts) for c in cases}


def pyca(cases: Sequence[MatrixCase]) -> Verdicts:
    verdicts: Verdicts = {}
    for c in cases:
        chain = x509.load_pem_x509_certificates(c.presents.chain_pem.encode())
        roots = [x509.load_pem_x509_certificate(r.encode()) for r in c.trusts]
        verifier = PolicyBuilder().store(Store(roots)).time(NOW).build_client_verifier()
        try:
            verifier.verify(chain[0], chain[1:])
            verdicts[c.name] = None
        except Exception as exc:  # VerificationError, or a policy refusal raised as ValueError
            verdicts[c.name] = f"{type(exc).__name__}: {exc}"
    return verdicts


def build_go(out_dir: Path) -> Path:
    """Compile verify_chains.go (standard library only) with its caches under `out_dir`."""
    binary = out_dir / "verify_chains"
    env = {
        **os.environ,
        "GOCACHE": str(out_dir / "gocache"),
        "GOPATH": str(out_dir / "gopath"),
        "GOFLAGS": "",
        "GO111MODULE": "on",
        "CGO_ENABLED": "0",
    }
    done = subprocess.run(
        ["go", "build", "-o", str(binary), str(GO_SOURCE)],
        cwd=out_dir, env=env, capture_output=True, text=True, timeout=BATCH_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go build failed:\n{done.stderr}")
    return binary


def go(binary: Path, cases: Sequence[MatrixCase]) -> Verdicts:
    request = {
        "now": int(NOW.timestamp()),
        "cases": [{"name": c.name, "chain_pem": c.presents.chain_pem, "roots_pem": "".join(c.trusts)} for c in cases],
    }
    return _run([str(binary)], request)


def node(cases: Sequence[MatrixCase]) -> Verdicts:
    request = {
        "cases": [
            {"name": c.name, "chain_pem": c.presents.chain_pem, "key_pem": c.presents.key_pem,
             "roots_pem": "".join(c.trusts)}
            for c in cases
        ],
    }
    return _run(["node", str(NODE_SCRIPT)], request)


def _run(argv: list[str], request: dict) -> Verdicts:
    done = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=BATCH_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout)
