"""`tether policy apply|get|delete|explain`: Linkerd-style server policy as Tether YAML.

`apply -f FILE` sends a whole multi-document file (Tether kinds, or the Linkerd kinds that
map; docs/authorization.md) to `PUT /v1/tether/policy`: the server validates every
document and writes all of them in one transaction, or nothing and lists every problem.
`explain SRC DST:PORT` runs `core.authz.decide(..., explain=True)` on a snapshot built
from the agent's authorization state: the very function the proxy runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import yaml

from tether.cli.common import HttpAddr, Token, TokenFile, client, print_json
from tether.cli.intention_cmds import fetch_snapshot, print_decision
from tether.core.authz import Source, decide
from tether.core.cidr import parse_ip
from tether.core.errors import InvalidInput
from tether.core.intentions import split_qualified
from tether.core.spiffe import SpiffeId, parse_spiffe_id, validate_namespace, validate_service_name

policy_app = typer.Typer(help="Apply and inspect server policy (which callers a service port accepts).",
                         no_args_is_help=True)
UNAUTHENTICATED = ("-", "unauthenticated")


@policy_app.command("apply")
def apply(
    file: str = typer.Option(..., "-f", "--file", "-file", metavar="FILE", help="Policy YAML (or JSON); '-' reads stdin."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Apply every document in FILE, all or nothing. On a bad file, every problem is listed.

    Example:

      tether policy apply -f policy.yaml
    """
    if file == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        path = Path(file)
        try:
            text, name = path.read_text(), path.name
        except OSError as exc:
            raise InvalidInput(f"-f {file}: cannot read it: {exc.strerror}") from None
    api = client(http_addr, token, token_file)
    response = api.put("/v1/tether/policy", params={"file": name}, content=text.encode(), check=False)
    if response.status_code >= 400:
        # A bad file: print every problem (one per line after the summary), not just the first.
        sys.stderr.write(f"tether: {response.text.strip() or response.reason_phrase}\n")
        raise typer.Exit(2)
    result = response.json()
    parts = [f"{len(result['Intentions'])} intention(s)"]
    parts += [f"server policy {p}" for p in result["ServerPolicies"]]
    parts += result.get("Linkerd", []) + result.get("Istio", [])
    if result["Mesh"] is not None:
        parts.append(f"mesh settings ({', '.join(result['Mesh']) or 'defaults'})")
    print(f"Applied {name}: {'; '.join(parts)} (index {result['Index']})")
    print_warnings(result.get("Warnings", []))


def print_warnings(warnings: list[str]) -> None:
    """What an apply accepted but cannot honour yet, one line each on stderr."""
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")


@policy_app.command("get")
def get(
    service: str = typer.Argument(..., help="The service."),
    output: str = typer.Option("yaml", "-format", "--format", "-o", metavar="yaml|json", help="Output format."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Show the server policies of SERVICE (and the mesh settings that apply when it has none).

    Example:

      tether policy get db
    """
    _service(service, "SERVICE")
    if output not in ("yaml", "json"):
        raise typer.BadParameter(f"{output!r}: use yaml or json", param_hint="-format")
    api = client(http_addr, token, token_file)
    docs = api.get(f"/v1/tether/policy/{service}").json()
    if not docs:
        docs = [api.get("/v1/tether/mesh").json()]
        if output == "yaml":
            print(f"# {service} has no server policy: the mesh settings below apply to every port")
    if output == "json":
        print_json(docs)
    else:
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))


@policy_app.command("delete")
def delete(
    service: str = typer.Argument(..., help="The service."),
    port: int = typer.Option(None, "-port", "--port", min=1, max=65535, help="The port's policy (default: the service-wide one)."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete the server policy of SERVICE (all ports), or of one of its ports.

    Example:

      tether policy delete db -port 5432
    """
    _service(service, "SERVICE")
    client(http_addr, token, token_file).delete(f"/v1/tether/policy/{service}", params={"port": port} if port else {})
    print(f"Deleted the server policy for {service}{f':{port}' if port else ' (all ports)'}.")


@policy_app.command("explain")
def explain(
    source: str = typer.Argument(..., metavar="SRC", help="Caller: a service name, a SPIFFE ID, or '-' (a plaintext client, no TLS)."),
    target: str = typer.Argument(..., metavar="DST:PORT", help="Destination service and port, e.g. db:5432."),
    addr: str = typer.Option(None, "-addr", "--addr", metavar="IP", help="The caller's address (for network rules)."),
    probe: bool = typer.Option(False, "-probe", "--probe", help="Treat the connection as the local agent's health probe."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Explain the decision for one connection. Exit 0 allowed, 1 denied, 2 error.

    Examples:

      tether policy explain web db:5432

      tether policy explain - db:5432 -addr 192.0.2.10
    """
    destination, _, raw_port = target.rpartition(":")
    if not destination or not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
        raise InvalidInput(f"DST:PORT {target!r}: write the destination service and a port, e.g. db:5432")
    _service(destination, "DST")
    ip = str(parse_ip(addr)) if addr else None
    snapshot, datacenter = fetch_snapshot(client(http_addr, token, token_file), destination)
    if source in UNAUTHENTICATED:
        identity = None
    elif source.lower().startswith("spiffe://"):
        identity = parse_spiffe_id(source)
    else:
        ns, name = split_qualified(source)  # `name` (the default namespace) or `ns/name`
        identity = SpiffeId(snapshot.trust_domain, _namespace(ns, "SRC"), datacenter, _service(name, "SRC"))
    # '-' is a client without TLS, exactly what the inbound proxy decides for a plaintext connection.
    source_ = Source(identity, ip, probe, plaintext=identity is None)
    decision = decide(snapshot, source_, destination, int(raw_port), explain=True)
    print_decision(decision, f"{source} -> {destination}:{raw_port}" + (f" from {ip}" if ip else ""))
    raise typer.Exit(0 if decision.allowed else 1)


def _namespace(value: str, what: str) -> str:
    try:
        return validate_namespace(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None


def _service(value: str, what: str) -> str:
    try:
        return validate_service_name(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None
