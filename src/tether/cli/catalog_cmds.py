"""`tether services`, `tether catalog`, `tether members`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json, print_table
from tether.core.errors import InvalidInput

services_app = typer.Typer(help="Register and deregister services with the local agent.", no_args_is_help=True)
catalog_app = typer.Typer(help="Read the catalog: services and nodes.", no_args_is_help=True)


def load_definitions(path: Path) -> list[dict]:
    """A definition file holds {"service": {...}} or {"services": [...]}, as Consul's do."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix == ".hcl":
        from tether.core.hcl import parse_hcl

        data = parse_hcl(text, source=str(path))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}: not valid JSON ({exc}); name an HCL file *.hcl") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected an object with a \"service\" or \"services\" key")
    lowered = {k.lower(): v for k, v in data.items()}
    if "service" in lowered:
        found = lowered["service"] if isinstance(lowered["service"], list) else [lowered["service"]]
    elif "services" in lowered and isinstance(lowered["services"], list):
        found = lowered["services"]
    else:
        raise InvalidInput(f"{path}: expected a \"service\" object or a \"services\" list at the top level")
    from tether.core.service import parse_service_definition  # pydantic: only where a file is validated

    for i, definition in enumerate(found):  # validate all before registering any
        if not isinstance(definition, dict):
            raise InvalidInput(f"{path.name}:service[{i}]: expected an object")
        body = {k: v for k, v in definition.items() if k.lower() != "token"}
        parse_service_definition(body, path=f"{path.name}:service[{i}]")
    return found


@services_app.command("register")
def register(
    files: list[Path] = typer.Argument(..., help="Definition files (JSON, or HCL named *.hcl)."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Register the services in definition files with the local agent.

    Example:

      echo '{"service": {"name": "web", "port": 8080, "connect": {"sidecar_service": {}}}}' > web.json

      tether services register web.json
    """
    definitions = [(f, d) for f in files for d in load_definitions(f)]
    api = client(http_addr, token, token_file)
    for path, definition in definitions:
        # A definition's own "token" (Consul's key) registers it, and its sidecar acts with it.
        own = next((v for k, v in definition.items() if k.lower() == "token"), None)
        body = {k: v for k, v in definition.items() if k.lower() != "token"}
        api.put("/v1/agent/service/register", json=body, headers={"X-Consul-Token": own} if own else None)
        name = {k.lower(): v for k, v in definition.items()}.get("name")
        out.print(f"Registered service: {name}")


@services_app.command("deregister")
def deregister(
    service_id: str = typer.Option(..., "-id", "--id", help="The service ID to remove."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Deregister a service (and its sidecar) from the local agent.

    Example:

      tether services deregister -id web
    """
    client(http_addr, token, token_file).put(f"/v1/agent/service/deregister/{service_id}")
    out.print(f"Deregistered service: {service_id}")


@catalog_app.command("services")
def catalog_services(
    tags: bool = typer.Option(False, "-tags", "--tags", help="Show tags too."),
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the services in the catalog.

    Example:

      tether catalog services -tags
    """
    services = client(http_addr, token, token_file).get("/v1/catalog/services").json()
    if as_json:
        print_json(services)
    elif tags:
        print_table(["Service", "Tags"], [(n, ",".join(t)) for n, t in sorted(services.items())])
    else:
        for name in sorted(services):
            out.print(name)


@catalog_app.command("nodes")
def catalog_nodes(
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the nodes in the catalog.

    Example:

      tether catalog nodes
    """
    nodes = client(http_addr, token, token_file).get("/v1/catalog/nodes").json()
    if as_json:
        print_json(nodes)
        return
    print_table(["Node", "ID", "Address", "DC"], [(n["Node"], n["ID"][:8], n["Address"], n["Datacenter"]) for n in nodes])


def members(
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the nodes (agents) of the cluster with their liveness.

    Example:

      tether members
    """
    found = client(http_addr, token, token_file).get("/v1/agent/members").json()
    if as_json:
        print_json(found)
        return
    status = {1: "alive", 2: "leaving", 3: "left", 4: "failed"}
    print_table(["Node", "Address", "Status", "DC"],
                [(m["Name"], m["Addr"], status.get(m["Status"], "?"), m["Tags"].get("dc", "")) for m in found])
