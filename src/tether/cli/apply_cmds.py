"""`tether apply -f FILE` (declarative configuration) and `tether external ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import yaml

from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json, print_table
from tether.core.errors import InvalidInput

external_app = typer.Typer(help="The registry of external services (egress).", no_args_is_help=True)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


def _documents(path: str) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(_read(path)) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: YAML does not parse: {exc}".replace("\n", " ")) from None
    for i, doc in enumerate(docs, start=1):
        if not isinstance(doc, dict) or "kind" not in doc:
            raise InvalidInput(f"{path} document {i}: expected a mapping with apiVersion and kind")
    return docs


def apply(
    files: list[str] = typer.Option(..., "-f", "--filename", "-filename", help="YAML file(s); '-' reads stdin."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Apply declarative configuration: external services and outbound policy (Tether
    ExternalService/OutboundPolicy, Istio ServiceEntry/DestinationRule) and authorization
    policy (Tether MeshPolicy/ServerPolicy/ServiceIntentions, Linkerd kinds).

    Every document is validated before anything is applied; a bad one applies nothing.

    Examples:

      tether apply -f payments-api.yaml

      kubectl get serviceentries -o yaml | tether apply -f -
    """
    from tether.core.external_yaml import EXTERNAL_KINDS, parse_external_documents
    from tether.core.policy_yaml import parse_policy_objects

    egress_kinds = {kind for _, kind in EXTERNAL_KINDS}
    egress, policy = [], []
    for path in files:
        for doc in _documents(path):
            (egress if doc.get("kind") in egress_kinds else policy).append(doc)
    # Validate everything locally with the server's own parsers, so a typo in the second
    # half of a file cannot leave the first half applied.
    if egress:
        parse_external_documents(egress, source=", ".join(files))
    if policy:
        parse_policy_objects(policy, source=", ".join(files))
    api = client(http_addr, token, token_file)
    if egress:
        from tether.cli.policy_cmds import print_warnings

        result = api.put("/v1/tether/external-services", json=egress).json()
        out.print(f"Applied external services: {', '.join(result['Applied'])}", markup=False, highlight=False)
        print_warnings(result.get("Warnings", []))
    if policy:
        from tether.cli.policy_cmds import print_warnings

        result = api.put("/v1/tether/policy", json=policy).json()
        what = [f"{len(result['Intentions'])} intention(s)", *(f"server policy {p}" for p in result["ServerPolicies"]),
                *result.get("Linkerd", [])]
        if result.get("Mesh") is not None:
            what.append("mesh settings")
        out.print(f"Applied {len(policy)} policy document(s): {'; '.join(what)}", markup=False, highlight=False)
        print_warnings(result.get("Warnings", []))


@external_app.command("list")
def external_list(
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the registered external services and the outbound policy.

    Example:

      tether external list
    """
    state = client(http_addr, token, token_file).get("/v1/tether/egress").json()
    if as_json:
        print_json(state)
        return
    rows = []
    for doc in state["Services"]:
        spec = doc["spec"]
        ports = ",".join(f"{p['number']}/{p['protocol']}" for p in spec.get("ports", []))
        where = ",".join(spec.get("hosts", []) + spec.get("addresses", [])) or "-"
        tls = spec.get("tls", {}).get("mode", "-")
        rows.append((doc["metadata"]["name"], where, ports, spec.get("resolution", ""), tls))
    print_table(["Name", "Hosts/addresses", "Ports", "Resolution", "TLS origination"], rows)
    mode = (state["Policy"] or {}).get("spec", {}).get("mode", "ALLOW_ANY")
    out.print(f"\nOutbound policy: {mode}", markup=False, highlight=False)


@external_app.command("get")
def external_get(name: str, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """Print one external service as re-appliable YAML.

    Example:

      tether external get payments-api > payments-api.yaml
    """
    doc = client(http_addr, token, token_file).get(f"/v1/tether/external-services/{name}").json()
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))


@external_app.command("delete")
def external_delete(name: str, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """Remove an external service from the registry.

    Example:

      tether external delete payments-api
    """
    client(http_addr, token, token_file).delete(f"/v1/tether/external-services/{name}")
    out.print(f"Deleted external service: {name}", markup=False, highlight=False)
