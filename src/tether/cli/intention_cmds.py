"""`tether intention create|delete|get|list|check|match`: Consul's intention commands.

Commands copied from Consul's docs run as typed (`tether intention create -allow web db`,
`tether intention check web db`, `tether intention match -source web`); every option
also has its `--double-dash` spelling. `check` exits 0 when allowed, 1 when denied, 2 on
an error. `check --explain` fetches the agent's authorization state and runs the same
`core.authz.decide` the proxy runs, printing every rule it considered.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from tether.cli.client import Client
from tether.cli.common import HttpAddr, Token, TokenFile, client, out, print_json, print_table
from tether.core.authz import Decision, PolicySnapshot, Source, decide
from tether.core.policy import Authorization
from tether.core.errors import InvalidInput
from tether.core.intentions import DEFAULT_NAMESPACE, Intention, qualified, split_qualified
from tether.core.spiffe import SpiffeId, validate_namespace, validate_service_name

intention_app = typer.Typer(help="Create and inspect intentions: which service may connect to which.",
                            no_args_is_help=True)


def _check_pair(source: str, destination: str) -> Intention:
    """Validate both (`name` or Consul's `ns/name`) locally so a typo exits 2 with the
    offending value named."""
    (src_ns, src), (dst_ns, dst) = split_qualified(source), split_qualified(destination)
    return Intention(src, dst, "allow", source_ns=src_ns, destination_ns=dst_ns)


def _describe(i: dict[str, Any]) -> str:
    src = qualified(i.get("SourceNS") or DEFAULT_NAMESPACE, i["SourceName"])
    dst = qualified(i.get("DestinationNS") or DEFAULT_NAMESPACE, i["DestinationName"])
    return f"{src} => {dst} ({i['Action']})"


def _meta(pairs: list[str]) -> dict[str, str]:
    meta = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"-meta {pair!r}: write KEY=VALUE")
        meta[key] = value
    return meta


@intention_app.command("create")
def create(
    source: str = typer.Argument(..., help="Source service name (or NS/NAME), or '*'."),
    destination: str = typer.Argument(..., help="Destination service name (or NS/NAME), or '*'."),
    allow: bool = typer.Option(False, "-allow", "--allow", help="Allow the connection (the default)."),
    deny: bool = typer.Option(False, "-deny", "--deny", help="Deny the connection."),
    replace: bool = typer.Option(False, "-replace", "--replace", help="Replace an existing intention for the pair."),
    description: str = typer.Option("", "-description", "--description", help="Free-form description."),
    meta: list[str] = typer.Option([], "-meta", "--meta", metavar="KEY=VALUE", help="Metadata; repeatable."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Create an intention (allow by default). Fails if one exists for the pair, unless -replace.

    Examples:

      tether intention create -allow web db

      tether intention create -deny '*' db

      tether intention create -allow team-a/web team-b/db

      tether intention create -replace -deny -description "maintenance" web db
    """
    if allow and deny:
        raise typer.BadParameter("give -allow or -deny, not both", param_hint="-allow/-deny")
    pair = _check_pair(source, destination)
    body = {"SourceNS": pair.source_ns, "SourceName": pair.source_name, "DestinationNS": pair.destination_ns,
            "DestinationName": pair.destination_name, "SourceType": "consul",
            "Action": "deny" if deny else "allow", "Description": description, "Meta": _meta(meta)}
    api = client(http_addr, token, token_file)
    if replace:
        params = {"source": source, "destination": destination}
        api.put("/v1/connect/intentions/exact", params=params, json={k: body[k] for k in ("Action", "Description", "Meta")})
    else:
        api.request("POST", "/v1/connect/intentions", json=body)
    out.print(f"Created: {_describe(body)}", markup=False, highlight=False)


def _lookup(api: Client, first: str, second: str | None) -> dict[str, Any]:
    """The intention named by `SRC DST` or by `ID`; NotFound names what was asked for."""
    if second is None:
        response = api.get(f"/v1/connect/intentions/{first}", ok404=True)
        missing = f"no intention with ID {first!r}"
    else:
        _check_pair(first, second)
        response = api.get("/v1/connect/intentions/exact", params={"source": first, "destination": second}, ok404=True)
        missing = f"no intention {first} -> {second}"
    if response.status_code == 404:  # a negative answer, not an error: exit 1 (as `tether kv get`)
        print(f"tether: {missing}; list them with 'tether intention list'", file=sys.stderr)
        raise typer.Exit(1)
    return response.json()


@intention_app.command("get")
def get(
    first: str = typer.Argument(..., metavar="SRC|ID", help="Source service, or an intention ID."),
    second: str = typer.Argument(None, metavar="[DST]", help="Destination service (with SRC)."),
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Show one intention, by its source and destination (or its ID).

    Example:

      tether intention get web db
    """
    found = _lookup(client(http_addr, token, token_file), first, second)
    if as_json:
        print_json(found)
        return
    rows = [("Source:", found["SourceName"]), ("Destination:", found["DestinationName"]), ("Action:", found["Action"]),
            ("ID:", found.get("ID", "")), ("Description:", found.get("Description", "")),
            ("Meta:", ", ".join(f"{k}={v}" for k, v in sorted(found.get("Meta", {}).items()))),
            ("Precedence:", found["Precedence"]), ("Created index:", found.get("CreateIndex", "")),
            ("Modified index:", found.get("ModifyIndex", ""))]
    for label, value in rows:
        out.print(f"{label:<16}{value}", markup=False, highlight=False)


@intention_app.command("delete")
def delete(
    first: str = typer.Argument(..., metavar="SRC|ID", help="Source service, or an intention ID."),
    second: str = typer.Argument(None, metavar="[DST]", help="Destination service (with SRC)."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete an intention, by its source and destination (or its ID).

    Examples:

      tether intention delete web db

      tether intention delete 8f246b77-f3e1-ff88-5b48-8ec93abf3e05
    """
    api = client(http_addr, token, token_file)
    found = _lookup(api, first, second)
    api.delete(f"/v1/connect/intentions/{found['ID']}")
    out.print("Intention deleted.")


@intention_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "-json", "--json", help="Print JSON."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List every intention, in evaluation order.

    Example:

      tether intention list
    """
    found = client(http_addr, token, token_file).get("/v1/connect/intentions").json()
    if as_json:
        print_json(found)
    elif not found:
        out.print("No intentions found.")
    else:
        print_table(["ID", "Source", "Action", "Destination", "Precedence"],
                    [(i["ID"], i["SourceName"], i["Action"], i["DestinationName"], i["Precedence"]) for i in found])


@intention_app.command("check")
def check(
    source: str = typer.Argument(..., help="Source service name."),
    destination: str = typer.Argument(..., help="Destination service name."),
    port: int = typer.Option(None, "-port", "--port", min=1, max=65535,
                             help="The destination port, for a per-port server policy."),
    explain: bool = typer.Option(False, "-explain", "--explain", help="Print the deciding rule and every rule considered."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Would a connection from SRC to DST be allowed? Exit 0 allowed, 1 denied, 2 error.

    The answer is the one the destination's sidecar gives: server policy (Linkerd's model)
    and intentions together, decided by the same function. When a server policy decided
    rather than an intention, a second line says which (-explain shows every rule).

    Examples:

      tether intention check web db

      tether intention check -explain -port 5432 web db
    """
    (src_ns, src), (dst_ns, dst) = split_qualified(source), split_qualified(destination)  # `name` or `ns/name`
    for name, ns, value in (("SRC", src_ns, src), ("DST", dst_ns, dst)):
        try:
            validate_namespace(ns)
            validate_service_name(value)
        except InvalidInput as exc:
            raise InvalidInput(f"{name}: {exc.message}") from None
    snapshot, datacenter = fetch_snapshot(client(http_addr, token, token_file), dst)
    ident = SpiffeId(snapshot.trust_domain, src_ns, datacenter, src)
    decision = decide(snapshot, Source(ident), dst, port, explain=explain,
                      namespace=dst_ns if "/" in destination else None)
    if explain:
        print_decision(decision, f"{source} -> {destination}" + (f":{port}" if port else ""))
    else:
        print("Allowed" if decision.allowed else "Denied")
        if isinstance(decision.rule, Authorization) or (decision.rule is None and "intention" not in decision.reason):
            print(f"  ({decision.reason}; see 'tether policy explain')")
    raise typer.Exit(0 if decision.allowed else 1)


@intention_app.command("match")
def match(
    name: str = typer.Argument(..., help="The service to match."),
    by_source: bool = typer.Option(False, "-source", "--source", help="Match intentions with this source."),
    by_destination: bool = typer.Option(False, "-destination", "--destination", help="Match intentions with this destination."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """List the intentions that apply to a source or a destination, in evaluation order.

    Examples:

      tether intention match -source web

      tether intention match -destination db
    """
    if by_source == by_destination:
        raise typer.BadParameter("give exactly one of -source or -destination", param_hint="-source/-destination")
    by = "source" if by_source else "destination"
    found = client(http_addr, token, token_file).get("/v1/connect/intentions/match", params={"by": by, "name": name}).json()
    for i in found.get(name, []):
        out.print(_describe(i), markup=False, highlight=False)


# -- shared with `tether policy explain` -------------------------------------------------------


def fetch_snapshot(api: Client, destination: str) -> tuple[PolicySnapshot, str]:
    """(snapshot, datacenter) for decisions with `destination`, built from the agent's
    authorization state (the server's, when pointed at a `tether server`) with the same code
    the agent and the proxy use. The token needs intentions:read on `destination`."""
    # The proxy's reader: the same decisions as core.policy_yaml.snapshot_from_state without
    # importing its pydantic schemas (~60 ms of a CLI command's start) for canonical state.
    from tether.core.policy_state import snapshot_from_agent_state

    scope = {"service": destination}
    response = api.get("/v1/agent/connect/authz-snapshot", params=scope, ok404=True)
    if response.status_code == 404:
        response = api.get("/v1/internal/tether/authz", params=scope)
    state = response.json()
    return snapshot_from_agent_state(state, state["TrustDomain"]), state.get("Datacenter", "dc1")


def print_decision(decision: Decision, what: str) -> None:
    """The verdict, the rule that decided (or the default), and every rule considered."""
    verdict = "Allowed" if decision.allowed else "Denied"
    write = sys.stdout.write
    write(f"{verdict}{' (audit: would have been denied)' if decision.audit else ''}: {what}\n")
    if isinstance(decision.rule, Intention):
        write(f"Decided by: intention {decision.rule}\n")
    elif decision.rule is not None:
        write(f"Decided by: authorization {decision.rule}\n")
    else:
        write("Decided by: default policy\n")
    write(f"Reason: {decision.reason}\n")
    write("Considered:\n")
    for c in decision.considered:
        # Intentions and authorizations print as one line; a server policy is named in `why`.
        rule = f" {c.rule}" if isinstance(c.rule, (Intention, Authorization)) else ""
        write(f"  {'match   ' if c.matched else 'no match'}  [{c.step}]{rule}: {c.why}\n")
