"""`tether acl ...`: bootstrap, tokens, policies, roles and the agent's tokens, in Consul's
spellings (`consul acl token create -service-identity web ...` works as `tether acl ...`).

Output is Consul's pretty layout (cli/acl_format.py), or the API's JSON with `-format json`.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from tether.cli.acl_format import (
    format_policy, format_role, format_token, parse_node_identity, parse_service_identity,
)
from tether.cli.common import HttpAddr, Token, TokenFile, client, print_json
from tether.core.errors import InvalidInput

acl_app = typer.Typer(help="Manage ACLs: bootstrap, tokens, policies, roles.", no_args_is_help=True)
token_app = typer.Typer(help="Create and manage ACL tokens.", no_args_is_help=True)
policy_app = typer.Typer(help="Create and manage ACL policies.", no_args_is_help=True)
role_app = typer.Typer(help="Create and manage ACL roles.", no_args_is_help=True)
acl_app.add_typer(token_app, name="token")
acl_app.add_typer(policy_app, name="policy")
acl_app.add_typer(role_app, name="role")

Format = typer.Option("pretty", "-format", "--format", metavar="pretty|json", help="Output format.")
Description = typer.Option(None, "-description", "--description", help="A description.")
PolicyName = typer.Option([], "-policy-name", "--policy-name", metavar="NAME", help="A policy by name (repeatable).")
PolicyID = typer.Option([], "-policy-id", "--policy-id", metavar="ID", help="A policy by ID (repeatable).")
RoleName = typer.Option([], "-role-name", "--role-name", metavar="NAME", help="A role by name (repeatable).")
RoleID = typer.Option([], "-role-id", "--role-id", metavar="ID", help="A role by ID (repeatable).")
ServiceIdentity = typer.Option([], "-service-identity", "--service-identity", metavar="NAME[:DC,...]",
                               help="A service identity: the rights of that service and its sidecar (repeatable).")
NodeIdentity = typer.Option([], "-node-identity", "--node-identity", metavar="NODE:DC",
                            help="A node identity: the rights an agent on that node needs (repeatable).")


def _show(data: Any, fmt: str, pretty: Any) -> None:
    if fmt == "json":
        print_json(data)
    elif fmt == "pretty":
        print(pretty(data))
    else:
        raise typer.BadParameter(f"{fmt!r}: use pretty or json", param_hint="-format")


def _show_list(items: list[dict[str, Any]], fmt: str, pretty: Any) -> None:
    if fmt == "json":
        print_json(items)
        return
    _show(None, fmt, lambda _: "\n\n".join(pretty(i) for i in items))


def _links(names: list[str], ids: list[str]) -> list[dict[str, str]]:
    return [{"Name": n} for n in names] + [{"ID": i} for i in ids]


def _rules(value: str) -> str:
    """Consul's -rules syntax: the rules themselves, @FILE, or - for standard input."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise InvalidInput(f"-rules {value}: cannot read it: {exc.strerror}") from None
    return value


# -- bootstrap and the agent's tokens ------------------------------------------------------

@acl_app.command("bootstrap")
def bootstrap(fmt: str = Format, http_addr: str = HttpAddr) -> None:
    """Create the first management token (once per cluster). Keep its SecretID safe.

    Example:

      tether acl bootstrap
    """
    _show(client(http_addr).put("/v1/acl/bootstrap").json(), fmt, format_token)


@acl_app.command("set-agent-token")
def set_agent_token(
    kind: str = typer.Argument(..., metavar="KIND", help="default, agent, agent_recovery, dns, "
                               "config_file_service_registration or replication."),
    secret: str = typer.Argument(..., metavar="SECRET", help="The token's SecretID."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Set one of the local agent's own tokens (needs acl:write).

    Example:

      tether acl set-agent-token agent "$AGENT_SECRET"
    """
    client(http_addr, token, token_file).put(f"/v1/agent/token/{kind}", json={"Token": secret})
    print("ACL token successfully set")


# -- tokens ---------------------------------------------------------------------------------

@token_app.command("create")
def token_create(
    description: str = Description, policy_name: list[str] = PolicyName, policy_id: list[str] = PolicyID,
    role_name: list[str] = RoleName, role_id: list[str] = RoleID, service_identity: list[str] = ServiceIdentity,
    node_identity: list[str] = NodeIdentity,
    expires_ttl: str = typer.Option(None, "-expires-ttl", "--expires-ttl", metavar="DURATION",
                                    help="Expire the token after this long (1m to 24h), e.g. 8h."),
    secret: str = typer.Option(None, "-secret", "--secret", help="Use this SecretID (a UUID) instead of a new one."),
    accessor: str = typer.Option(None, "-accessor", "--accessor", help="Use this AccessorID (a UUID)."),
    local: bool = typer.Option(False, "-local", "--local", help="Mark the token local to this datacenter."),
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Create a token. It needs at least one policy, role or identity to be useful.

    Examples:

      tether acl token create -description "web's token" -service-identity web

      tether acl token create -policy-name kv-read -expires-ttl 8h

      tether acl token create -node-identity node1:dc1     # for the agent on node1
    """
    body: dict[str, Any] = {"Description": description or "", "Policies": _links(policy_name, policy_id),
                            "Roles": _links(role_name, role_id), "Local": local,
                            "ServiceIdentities": [parse_service_identity(s) for s in service_identity],
                            "NodeIdentities": [parse_node_identity(n) for n in node_identity]}
    for key, value in (("ExpirationTTL", expires_ttl), ("SecretID", secret), ("AccessorID", accessor)):
        if value:
            body[key] = value
    _show(client(http_addr, token, token_file).put("/v1/acl/token", json=body).json(), fmt, format_token)


@token_app.command("read")
def token_read(
    accessor: str = typer.Option(None, "-id", "--id", "-accessor-id", help="The token's AccessorID."),
    self_: bool = typer.Option(False, "-self", "--self", help="Read the token this command uses."),
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Read a token (its SecretID is shown only to tokens with acl:write).

    Examples:

      tether acl token read -id 986193b5-e2b5-eb26-6264-b524ea60cc6d

      tether acl token read -self
    """
    if bool(accessor) == self_:
        raise typer.BadParameter("give -id ACCESSOR or -self")
    path = "/v1/acl/token/self" if self_ else f"/v1/acl/token/{accessor}"
    _show(client(http_addr, token, token_file).get(path).json(), fmt, format_token)


@token_app.command("update")
def token_update(
    accessor: str = typer.Option(..., "-id", "--id", "-accessor-id", help="The token's AccessorID."),
    description: str = Description, policy_name: list[str] = PolicyName, policy_id: list[str] = PolicyID,
    role_name: list[str] = RoleName, role_id: list[str] = RoleID, service_identity: list[str] = ServiceIdentity,
    node_identity: list[str] = NodeIdentity,
    append_policy_name: list[str] = typer.Option([], "-append-policy-name", "--append-policy-name",
                                                 help="Add a policy by name, keeping the others (repeatable)."),
    append_policy_id: list[str] = typer.Option([], "-append-policy-id", "--append-policy-id",
                                               help="Add a policy by ID, keeping the others (repeatable)."),
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Change a token: given lists replace the token's, -append-* flags add to them.

    Example:

      tether acl token update -id 986193b5-e2b5-eb26-6264-b524ea60cc6d -append-policy-name kv-read
    """
    api = client(http_addr, token, token_file)
    current = api.get(f"/v1/acl/token/{accessor}").json()
    body = {k: current[k] for k in ("Description", "Policies", "Roles", "ServiceIdentities", "NodeIdentities",
                                    "TemplatedPolicies", "Local") if k in current}
    if description is not None:
        body["Description"] = description
    if policy_name or policy_id:
        body["Policies"] = _links(policy_name, policy_id)
    if append_policy_name or append_policy_id:
        body["Policies"] = [{"ID": p["ID"]} for p in body.get("Policies", [])] + _links(append_policy_name,
                                                                                       append_policy_id)
    if role_name or role_id:
        body["Roles"] = _links(role_name, role_id)
    if service_identity:
        body["ServiceIdentities"] = [parse_service_identity(s) for s in service_identity]
    if node_identity:
        body["NodeIdentities"] = [parse_node_identity(n) for n in node_identity]
    if current.get("ExpirationTime"):
        body["ExpirationTime"] = current["ExpirationTime"]
    _show(api.put(f"/v1/acl/token/{accessor}", json=body).json(), fmt, format_token)


@token_app.command("delete")
def token_delete(
    accessor: str = typer.Option(..., "-id", "--id", "-accessor-id", help="The token's AccessorID."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete a token: it stops working at once (agents drop their cached copy).

    Example:

      tether acl token delete -id 986193b5-e2b5-eb26-6264-b524ea60cc6d
    """
    client(http_addr, token, token_file).delete(f"/v1/acl/token/{accessor}")
    print(f"Token \"{accessor}\" deleted successfully")


@token_app.command("list")
def token_list(fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """List tokens.

    Example:

      tether acl token list
    """
    _show_list(client(http_addr, token, token_file).get("/v1/acl/tokens").json(), fmt, format_token)


@token_app.command("clone")
def token_clone(
    accessor: str = typer.Option(..., "-id", "--id", "-accessor-id", help="The token to copy."),
    description: str = Description,
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Copy a token's policies, roles and identities into a new token (new secrets).

    Example:

      tether acl token clone -id 986193b5-e2b5-eb26-6264-b524ea60cc6d -description "rotated web token"
    """
    body = {"Description": description} if description is not None else {}
    _show(client(http_addr, token, token_file).put(f"/v1/acl/token/{accessor}/clone", json=body).json(), fmt,
          format_token)


# -- policies ---------------------------------------------------------------------------------

def _policy_path(api: Any, policy_id: str | None, name: str | None) -> str:
    if bool(policy_id) == bool(name):
        raise typer.BadParameter("give -id ID or -name NAME")
    return f"/v1/acl/policy/{policy_id}" if policy_id else f"/v1/acl/policy/{api.get(f'/v1/acl/policy/name/{name}').json()['ID']}"


@policy_app.command("create")
def policy_create(
    name: str = typer.Option(..., "-name", "--name", help="The policy's name."),
    rules: str = typer.Option("", "-rules", "--rules", help="Rules (HCL or JSON), @FILE, or - for stdin."),
    description: str = Description,
    datacenter: list[str] = typer.Option([], "-valid-datacenter", "--valid-datacenter",
                                         help="Only in this datacenter (repeatable; default all)."),
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Create a policy from rules in Consul's language.

    Example:

      tether acl policy create -name web-kv -rules 'key_prefix "web/" { policy = "write" }'

      tether acl policy create -name ops -rules @ops.hcl
    """
    body = {"Name": name, "Description": description or "", "Rules": _rules(rules), "Datacenters": datacenter}
    _show(client(http_addr, token, token_file).put("/v1/acl/policy", json=body).json(), fmt, format_policy)


@policy_app.command("read")
def policy_read(
    policy_id: str = typer.Option(None, "-id", "--id", help="The policy's ID."),
    name: str = typer.Option(None, "-name", "--name", help="The policy's name."),
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Read a policy with its rules.

    Example:

      tether acl policy read -name global-management
    """
    if bool(policy_id) == bool(name):
        raise typer.BadParameter("give -id ID or -name NAME")
    path = f"/v1/acl/policy/{policy_id}" if policy_id else f"/v1/acl/policy/name/{name}"
    _show(client(http_addr, token, token_file).get(path).json(), fmt, format_policy)


@policy_app.command("update")
def policy_update(
    policy_id: str = typer.Option(None, "-id", "--id", help="The policy's ID."),
    name: str = typer.Option(None, "-name", "--name", help="The policy's name."),
    new_name: str = typer.Option(None, "-new-name", "--new-name", help="Rename it."),
    rules: str = typer.Option(None, "-rules", "--rules", help="New rules (HCL or JSON), @FILE, or -."),
    description: str = Description,
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Change a policy's rules, name or description (the rest is kept).

    Example:

      tether acl policy update -name web-kv -rules @web-kv.hcl
    """
    api = client(http_addr, token, token_file)
    path = _policy_path(api, policy_id, name)
    current = api.get(path).json()
    body = {"Name": new_name or current["Name"],
            "Description": current.get("Description", "") if description is None else description,
            "Rules": current.get("Rules", "") if rules is None else _rules(rules),
            "Datacenters": current.get("Datacenters", [])}
    _show(api.put(path, json=body).json(), fmt, format_policy)


@policy_app.command("delete")
def policy_delete(
    policy_id: str = typer.Option(None, "-id", "--id", help="The policy's ID."),
    name: str = typer.Option(None, "-name", "--name", help="The policy's name."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete a policy (tokens and roles that link it lose what it granted).

    Example:

      tether acl policy delete -name web-kv
    """
    api = client(http_addr, token, token_file)
    path = _policy_path(api, policy_id, name)
    api.delete(path)
    print(f"Policy \"{policy_id or name}\" deleted successfully")


@policy_app.command("list")
def policy_list(fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """List policies.

    Example:

      tether acl policy list
    """
    policies = client(http_addr, token, token_file).get("/v1/acl/policies").json()
    if fmt == "pretty":
        print("\n".join(f"{p['Name']}:\n   ID:           {p['ID']}\n   Description:  {p.get('Description', '')}\n"
                        f"   Datacenters:  {', '.join(p.get('Datacenters') or [])}" for p in policies))
    else:
        _show(policies, fmt, format_policy)


# -- roles --------------------------------------------------------------------------------------

def _role_path(api: Any, role_id: str | None, name: str | None) -> str:
    if bool(role_id) == bool(name):
        raise typer.BadParameter("give -id ID or -name NAME")
    return f"/v1/acl/role/{role_id}" if role_id else f"/v1/acl/role/{api.get(f'/v1/acl/role/name/{name}').json()['ID']}"


@role_app.command("create")
def role_create(
    name: str = typer.Option(..., "-name", "--name", help="The role's name."),
    description: str = Description, policy_name: list[str] = PolicyName, policy_id: list[str] = PolicyID,
    service_identity: list[str] = ServiceIdentity, node_identity: list[str] = NodeIdentity,
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Create a role: a named set of policies and identities that tokens can share.

    Example:

      tether acl role create -name web-role -policy-name web-kv -service-identity web
    """
    body = {"Name": name, "Description": description or "", "Policies": _links(policy_name, policy_id),
            "ServiceIdentities": [parse_service_identity(s) for s in service_identity],
            "NodeIdentities": [parse_node_identity(n) for n in node_identity]}
    _show(client(http_addr, token, token_file).put("/v1/acl/role", json=body).json(), fmt, format_role)


@role_app.command("read")
def role_read(
    role_id: str = typer.Option(None, "-id", "--id", help="The role's ID."),
    name: str = typer.Option(None, "-name", "--name", help="The role's name."),
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Read a role.

    Example:

      tether acl role read -name web-role
    """
    if bool(role_id) == bool(name):
        raise typer.BadParameter("give -id ID or -name NAME")
    path = f"/v1/acl/role/{role_id}" if role_id else f"/v1/acl/role/name/{name}"
    _show(client(http_addr, token, token_file).get(path).json(), fmt, format_role)


@role_app.command("update")
def role_update(
    role_id: str = typer.Option(None, "-id", "--id", help="The role's ID."),
    name: str = typer.Option(None, "-name", "--name", help="The role's name."),
    new_name: str = typer.Option(None, "-new-name", "--new-name", help="Rename it."),
    description: str = Description, policy_name: list[str] = PolicyName, policy_id: list[str] = PolicyID,
    service_identity: list[str] = ServiceIdentity, node_identity: list[str] = NodeIdentity,
    fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Change a role: given lists replace the role's, the rest is kept.

    Example:

      tether acl role update -name web-role -policy-name web-kv -policy-name web-events
    """
    api = client(http_addr, token, token_file)
    path = _role_path(api, role_id, name)
    current = api.get(path).json()
    body = {k: current[k] for k in ("Name", "Description", "Policies", "ServiceIdentities", "NodeIdentities",
                                    "TemplatedPolicies") if k in current}
    body["Name"] = new_name or current["Name"]
    if description is not None:
        body["Description"] = description
    if policy_name or policy_id:
        body["Policies"] = _links(policy_name, policy_id)
    if service_identity:
        body["ServiceIdentities"] = [parse_service_identity(s) for s in service_identity]
    if node_identity:
        body["NodeIdentities"] = [parse_node_identity(n) for n in node_identity]
    _show(api.put(path, json=body).json(), fmt, format_role)


@role_app.command("delete")
def role_delete(
    role_id: str = typer.Option(None, "-id", "--id", help="The role's ID."),
    name: str = typer.Option(None, "-name", "--name", help="The role's name."),
    http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile,
) -> None:
    """Delete a role.

    Example:

      tether acl role delete -name web-role
    """
    api = client(http_addr, token, token_file)
    api.delete(_role_path(api, role_id, name))
    print(f"Role \"{role_id or name}\" deleted successfully")


@role_app.command("list")
def role_list(fmt: str = Format, http_addr: str = HttpAddr, token: str = Token, token_file: str = TokenFile) -> None:
    """List roles.

    Example:

      tether acl role list
    """
    _show_list(client(http_addr, token, token_file).get("/v1/acl/roles").json(), fmt, format_role)
