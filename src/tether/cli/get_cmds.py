"""`tether get KIND [NAME]`: the stored policy and external-service objects, kubectl style."""

from __future__ import annotations

import sys

import typer
import yaml

from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json, print_table

_OUTPUTS = ("table", "yaml", "json")


def get(
    kind: str = typer.Argument(..., help="Server, ServerAuthorization, AuthorizationPolicy, MeshTLSAuthentication, "
                                         "NetworkAuthentication, Namespace, ServerPolicy, MeshPolicy, ServiceEntry, "
                                         "DestinationRule, ... (any case, singular or plural)."),
    name: str = typer.Argument(None, help="One object's metadata.name (default: every object of KIND)."),
    namespace: str = typer.Option(None, "-n", "--namespace", "-namespace",
                                  help="Only this namespace (mesh-wide objects are always shown)."),
    output: str = typer.Option("table", "-o", "--output", "-output", metavar="table|yaml|json", help="Output format."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Print stored objects as `tether apply -f` took them: one document with NAME, else a
    `kind: List`. What `-o yaml` prints applies back unchanged (a no-op).

    Examples:

      tether get servers -n emojivoto

      tether get server voting-grpc -n emojivoto -o yaml > voting-grpc.yaml

      tether get authorizationpolicies -o yaml | tether apply -f -
    """
    from tether.core.get_select import as_output, select, table_rows

    if output not in _OUTPUTS:
        raise typer.BadParameter(f"{output!r}: use {', '.join(_OUTPUTS)}", param_hint="-o")
    api = client(http_addr, token, token_file)
    # Both lists are filtered by the token's ACL (never refused whole): what it may read is shown.
    docs = [*api.get("/v1/tether/policy").json(), *api.get("/v1/tether/external-services").json()]
    found = select(docs, kind, name, namespace)
    if output == "table":
        if not found:
            out.print(f"No {kind} found", markup=False, highlight=False)
            return
        print_table(["Kind", "Namespace", "Name"], table_rows(found))
        return
    result = as_output(found, named=name is not None)
    if output == "json":
        print_json(result)
    else:
        sys.stdout.write(yaml.safe_dump(result, sort_keys=False, default_flow_style=False))
