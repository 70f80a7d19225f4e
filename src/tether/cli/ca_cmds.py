"""`tether ca roots|get-config|set-config|leaf|inspect`: the mesh's CA, for operators.

Everything but `inspect` talks to the local agent (roots and leaves from its cache; the
configuration is forwarded to the server). `inspect` reads a PEM file and needs no agent.
Certificate parsing is imported lazily, so `tether --help` stays quick.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json, print_table
from tether.core.errors import InvalidInput

ca_app = typer.Typer(help="The mesh's certificate authority: roots, configuration, leaf certificates.",
                     no_args_is_help=True)


@ca_app.command("roots")
def ca_roots(
    pem: bool = typer.Option(False, "-pem", "--pem", help="Print the root certificates as PEM."),
    detailed: bool = typer.Option(False, "-detailed", "--detailed", help="Print the full roots JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the CA roots peers trust (the active one signs new leaves).

    Examples:

      tether ca roots

      tether ca roots -pem > roots.pem
    """
    data = client(http_addr, token, token_file).get("/v1/agent/connect/ca/roots").json()
    if pem:
        sys.stdout.write("".join(r["RootCert"] for r in data["Roots"]))
        return
    if detailed:
        print_json(data)
        return
    out.print(f"Trust domain: {data['TrustDomain']}", markup=False, highlight=False)
    # IDs are 20 colon-hex bytes; the first 6 tell roots apart (-detailed prints them whole).
    print_table(["ID", "Name", "Active", "Key", "Not After", "Intermediates"],
                [(r["ID"][:17] + "…", r["Name"], "yes" if r["Active"] else "no",
                  f"{r['PrivateKeyType']}-{r['PrivateKeyBits']}", r["NotAfter"][:10], len(r["IntermediateCerts"] or []))
                 for r in data["Roots"]])


@ca_app.command("get-config")
def ca_get_config(http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """Print the CA configuration as JSON (never a private key).

    Example:

      tether ca get-config > ca.json
    """
    print_json(client(http_addr, token, token_file).get("/v1/connect/ca/configuration").json())


@ca_app.command("set-config")
def ca_set_config(
    config_file: str = typer.Option(..., "-config-file", "--config-file", metavar="FILE",
                                    help="JSON body: {\"Provider\": ..., \"Config\": {...}}; '-' reads stdin."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Change the CA: leaf TTL, signing rate, a new root (rotation), or the provider.

    A new root is cross-signed by the old one and both are served until every old leaf has expired,
    so connections keep working throughout (docs/identity.md).

    Examples:

      echo '{"Config": {"LeafCertTTL": "24h"}}' | tether ca set-config -config-file -

      echo '{"Provider": "consul", "Config": {"RotateNow": true}}' | tether ca set-config -config-file -

      tether ca set-config -config-file external.json

    with external.json holding (paths on the server):
    {"Provider": "external", "Config": {"RootCertFile": "root.pem",
    "IntermediateCertFile": "ca.pem", "IntermediateKeyFile": "ca.key"}}
    """
    body = _load_json(config_file)
    client(http_addr, token, token_file).put("/v1/connect/ca/configuration", json=body)
    out.print("Configuration updated!", markup=False, highlight=False)


@ca_app.command("leaf")
def ca_leaf(
    service: str = typer.Argument(..., help="The service whose identity to fetch."),
    out_dir: Path = typer.Option(None, "-out-dir", "--out-dir", metavar="DIR",
                                 help="Also write cert.pem, key.pem (mode 0600) and roots.pem there."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Show a service's identity (its leaf certificate); with -out-dir, write it to files.

    Without -out-dir nothing is written and no key is printed. With it, for programs that
    want their identity on disk: the agent keeps renewing its own copy; run this again
    before ValidBefore to refresh the files.

    Examples:

      tether ca leaf web

      tether ca leaf web -out-dir /run/web-tls
    """
    api = client(http_addr, token, token_file)
    leaf = api.get(f"/v1/agent/connect/ca/leaf/{service}").json()
    print(f"{leaf['ServiceURI']}\n  serial {leaf['SerialNumber']}\n  valid from {leaf['ValidAfter']} "
          f"until {leaf['ValidBefore']}")
    if out_dir is None:
        print("  (add -out-dir DIR to write cert.pem, key.pem and roots.pem)")
        return
    roots = api.get("/v1/agent/connect/ca/roots").json()
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(out_dir / "cert.pem", leaf["CertPEM"], 0o644)
        _write(out_dir / "key.pem", leaf["PrivateKeyPEM"], 0o600)
        _write(out_dir / "roots.pem", "".join(r["RootCert"] for r in roots["Roots"]), 0o644)
    except OSError as exc:
        raise InvalidInput(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    print(f"  wrote {out_dir}/cert.pem, {out_dir}/key.pem (0600), {out_dir}/roots.pem")


@ca_app.command("inspect")
def ca_inspect(
    file: Path = typer.Argument(..., help="A PEM file: a certificate, or a leaf followed by intermediates."),
    roots: Path = typer.Option(None, "-roots", "--roots", metavar="FILE",
                               help="Verify the chain against these root certificates (PEM). Exit 1 if it fails."),
) -> int:
    """Show SPIFFE ID, issuer chain and validity of certificates (no agent needed).

    Examples:

      tether ca inspect /run/web-tls/cert.pem

      tether ca inspect /run/web-tls/cert.pem -roots /run/web-tls/roots.pem
    """
    from tether.ca import x509 as tx
    from tether.core.chain import describe, match_chain

    certs = tx.load_certificates_pem(_read(file), field=str(file))
    now = datetime.now(timezone.utc)
    for i, cert in enumerate(certs):
        _print_summary("leaf" if i == 0 else f"cert {i + 1}", tx.cert_summary(cert), now)
    if roots is None:
        chain = " -> ".join(describe(c) for c in certs)
        out.print(f"issuer chain (as given): {chain} -> issued by '{certs[-1].issuer.rfc4514_string()}'",
                  markup=False, highlight=False)
        return 0
    trusted = tx.load_certificates_pem(_read(roots), field=str(roots))
    try:
        path = match_chain(certs[0], certs[1:], trusted, now=now)
    except InvalidInput as exc:
        out.print(f"chain: does NOT verify: {exc.message}", markup=False, highlight=False)
        return 1
    out.print("chain: verifies: " + " -> ".join(describe(c) for c in path), markup=False, highlight=False)
    return 0


def _print_summary(label: str, info: dict[str, Any], now: datetime) -> None:
    not_after = datetime.fromisoformat(info["not_after"])
    left = not_after - now
    state = f"expires in {_human(left.total_seconds())}" if left.total_seconds() > 0 else "EXPIRED"
    lines = [
        f"{label}: {info['subject']}",
        f"  SPIFFE ID:  {info['spiffe_id'] or '(none)'}",
        f"  issuer:     {info['issuer']}",
        f"  serial:     {info['serial']}",
        f"  valid:      {info['not_before']} .. {info['not_after']} ({state})",
        f"  key:        {info['key_type']} {info['key_bits']}{'  (CA)' if info['is_ca'] else ''}",
    ]
    out.print("\n".join(lines), markup=False, highlight=False)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _read(path: Path | str) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not a text (PEM/JSON) file") from None


def _load_json(path: str) -> Any:
    text = _read(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f'{path}: expected a JSON object like {{"Provider": "consul", "Config": {{...}}}}')
    return data


def _write(path: Path, text: str, mode: int) -> None:
    """Write atomically, with `mode` from the first byte (a key is never briefly world-readable)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
