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


def _documents(path: str) -> list[tuple[str, object]]:
    """(document number, document) of one file, `kind: List` expanded (core/k8s_input.py)."""
    from tether.core.k8s_input import expand_documents

    try:
        return expand_documents(list(yaml.safe_load_all(_read(path))))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: YAML does not parse: {exc}".replace("\n", " ")) from None


def is_egress(doc: object) -> bool:
    """External-service kinds go to the registry; everything else is authorization policy.
    Routed by apiVersion group, so each parser's own per-kind hint reaches the user."""
    if not isinstance(doc, dict):
        return False
    group = str(doc.get("apiVersion", "")).split("/")[0]
    return group == "networking.istio.io" or (group == "tether.dev" and doc.get("kind") in ("ExternalService", "OutboundPolicy"))


def apply(
    files: list[str] = typer.Option(..., "-f", "--filename", "-filename", help="YAML file(s); '-' reads stdin."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Apply declarative configuration: external services and outbound policy (Tether
    ExternalService/OutboundPolicy, Istio ServiceEntry/DestinationRule) and authorization
    policy (Tether MeshPolicy/ServerPolicy/ServiceIntentions, Linkerd kinds, Istio
    AuthorizationPolicy's L4 subset).

    Multi-document streams and `kind: List` (what `kubectl get -o yaml` prints) are read;
    fields Kubernetes writes (status, metadata.uid, resourceVersion, managedFields) are
    ignored. Every document is validated before anything is applied; a bad one applies
    nothing, and every problem of every document is listed. What is accepted but has no
    effect yet is printed as a warning.

    Examples:

      tether apply -f payments-api.yaml

      kubectl get serviceentries,destinationrules -o yaml | tether apply -f -
    """
    from tether.core.external_yaml import parse_external_documents
    from tether.core.policy_yaml import parse_policy_objects

    source = ", ".join(files)
    egress: list[tuple[str, object]] = []
    policy: list[tuple[str, object]] = []
    for path in files:
        for n, doc in _documents(path):
            (egress if is_egress(doc) else policy).append((n if len(files) == 1 else f"{n} of {path}", doc))
    # Validate everything locally with the server's own parsers, so a typo in the second
    # half of a file cannot leave the first half applied; report both halves' problems.
    problems = []
    for parse, docs in ((parse_external_documents, egress), (parse_policy_objects, policy)):
        if docs:
            try:
                parse([d for _, d in docs], source=source, numbers=[n for n, _ in docs])
            except InvalidInput as exc:
                problems.append(exc.message)
    if problems:
        raise InvalidInput("\n".join(problems))
    api = client(http_addr, token, token_file)
    from tether.cli.policy_cmds import print_warnings

    if egress:
        result = api.put("/v1/tether/external-services", json=[d for _, d in egress]).json()
        out.print(f"Applied external services: {', '.join(result['Applied'])}", markup=False, highlight=False)
        print_warnings(result.get("Warnings", []))
    if policy:
        result = api.put("/v1/tether/policy", json=[d for _, d in policy]).json()
        what = [f"{len(result['Intentions'])} intention(s)", *(f"server policy {p}" for p in result["ServerPolicies"]),
                *result.get("Linkerd", []), *result.get("Istio", [])]
        if result.get("Mesh") is not None:
            what.append("mesh settings")
        out.print(f"Applied {len(policy)} policy document(s): {'; '.join(what)}", markup=False, highlight=False)
        print_warnings(result.get("Warnings", []))


def delete(
    files: list[str] = typer.Option(..., "-f", "--filename", "-filename", help="YAML file(s); '-' reads stdin."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete what the documents in FILE name (the objects `tether apply -f FILE` made):
    Linkerd objects, Istio AuthorizationPolicies, Tether ServerPolicies and
    ServiceIntentions, external services (ExternalService, ServiceEntry) and
    DestinationRules. Each is deleted on its own; one
    already gone is reported and the rest go on (exit 1 if any was missing).

    Example:

      tether delete -f emojivoto-policy.yml
    """
    from tether.core.delete_plan import delete_requests

    plan = [step for path in files for _, doc in _documents(path) for step in delete_requests(doc)]
    api = client(http_addr, token, token_file)
    missing = 0
    for what, route, params in plan:
        response = api.delete(route, params=params, ok404=True)
        if response.status_code == 404:
            missing += 1
            out.print(f"Not found (already deleted?): {what}", markup=False, highlight=False)
        else:
            out.print(f"Deleted {what}", markup=False, highlight=False)
    if missing:
        raise typer.Exit(1)


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
