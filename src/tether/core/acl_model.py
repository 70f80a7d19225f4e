"""ACL objects in Consul's JSON shapes: tokens, policies, roles, identities, templated policies.

Pure validation and derivation; storage and link resolution (a policy named in a token
must exist) are the control plane's (control/acl.py). Bodies are read with Consul's
case-insensitive keys (core/normalize.py); a key that matches nothing is an error.

Identities are Consul's shorthand for policies, expanded here into rules:

  ServiceIdentity web   service "web" and "web-sidecar-proxy" write; service_prefix "" and
                        node_prefix "" read (what a service and its sidecar need)
  NodeIdentity n1       node "n1" write; service_prefix "" read (what an agent needs)
  builtin/dns           node_prefix, service_prefix and query_prefix "" read
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from tether.core.acl import READ, WRITE, Rule
from tether.core.acl_rules import format_rules_for_identity, parse_rules
from tether.core.duration import parse_duration
from tether.core.errors import InvalidInput
from tether.core.normalize import Shape, normalize, raise_if

GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001"
GLOBAL_MANAGEMENT_NAME = "global-management"
GLOBAL_READ_ONLY_ID = "00000000-0000-0000-0000-000000000002"
GLOBAL_READ_ONLY_NAME = "builtin/global-read-only"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_SECRET = "anonymous"
RESERVED_IDS = frozenset({GLOBAL_MANAGEMENT_ID, GLOBAL_READ_ONLY_ID, ANONYMOUS_ACCESSOR})

#: Consul's bounds on ExpirationTTL (acl.token_min/max_expiration_ttl defaults).
MIN_EXPIRATION_TTL = 60.0
MAX_EXPIRATION_TTL = 24 * 3600.0

_POLICY_NAME = re.compile(r"^[A-Za-z0-9\-_/]{1,128}$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,256}$")
_IDENTITY_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$")

_LINK = Shape({"ID": None, "Name": None})
_SERVICE_IDENTITY = Shape({"ServiceName": None, "Datacenters": None})
_NODE_IDENTITY = Shape({"NodeName": None, "Datacenter": None})
_TEMPLATED = Shape({"TemplateName": None, "TemplateVariables": Shape({"Name": None}), "Datacenters": None})
_IDENTITIES = {"Policies": [_LINK], "Roles": [_LINK], "ServiceIdentities": [_SERVICE_IDENTITY],
               "NodeIdentities": [_NODE_IDENTITY], "TemplatedPolicies": [_TEMPLATED]}
TOKEN_SHAPE = Shape({"AccessorID": None, "SecretID": None, "Description": None, "Local": None,
                     "ExpirationTime": None, "ExpirationTTL": None, "AuthMethod": None, "Namespace": None,
                     "Partition": None, "CreateTime": None, "Hash": None, "CreateIndex": None,
                     "ModifyIndex": None, "Legacy": None, **_IDENTITIES})
POLICY_SHAPE = Shape({"ID": None, "Name": None, "Description": None, "Rules": None, "Datacenters": None,
                      "Namespace": None, "Partition": None, "Hash": None, "CreateIndex": None, "ModifyIndex": None})
ROLE_SHAPE = Shape({"ID": None, "Name": None, "Description": None, "Namespace": None, "Partition": None,
                    "Hash": None, "CreateIndex": None, "ModifyIndex": None,
                    **{k: v for k, v in _IDENTITIES.items() if k != "Roles"}})
#: Read-only fields a client may send back (Consul ignores them on write too).
_READ_ONLY = ("CreateTime", "Hash", "CreateIndex", "ModifyIndex", "Legacy")


# -- templated policies -----------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    name: str
    needs_name: bool
    rules: tuple[tuple[str, str, str], ...]  # (kind, name pattern with {name}, level)
    description: str

    def render(self, name: str = "") -> str:
        return format_rules_for_identity([(k, n.replace("{name}", name), level) for k, n, level in self.rules])


_SERVICE_RULES = (("service", "{name}", WRITE), ("service", "{name}-sidecar-proxy", WRITE),
                  ("service_prefix", "", READ), ("node_prefix", "", READ))
_NODE_RULES = (("node", "{name}", WRITE), ("service_prefix", "", READ))
TEMPLATES = {t.name: t for t in (
    Template("builtin/service", True, _SERVICE_RULES, "Gives the token or role permissions to register a "
             "service and its sidecar, and to discover services in the mesh."),
    Template("builtin/node", True, _NODE_RULES, "Gives the token or role permissions for a node (agent) "
             "to register itself and read the services of the mesh."),
    Template("builtin/dns", False, (("node_prefix", "", READ), ("service_prefix", "", READ),
                                     ("query_prefix", "", READ)),
             "Gives the token or role the permissions the DNS interface needs."),
)}

GLOBAL_READ_ONLY_RULES = "\n".join(
    f'{kind}_prefix "" {{\n  policy = "read"\n}}' for kind in ("agent", "event", "key", "node", "query",
                                                                "service", "session")
) + '\nkeyring = "read"\noperator = "read"\nmesh = "read"\npeering = "read"\n'


def template_json(template: Template) -> dict[str, Any]:
    schema = ('{"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}, '
              '"required": ["name"]}') if template.needs_name else ""
    return {"TemplateName": template.name, "Schema": schema, "Template": template.render("{{.Name}}"),
            "Description": template.description}


def identity_rules(doc: dict[str, Any], datacenter: str, origin: str) -> list[Rule]:
    """The rules a token's or role's identities and templated policies stand for here."""
    out: list[Rule] = []
    for ident in doc.get("ServiceIdentities") or []:
        dcs = ident.get("Datacenters") or []
        if not dcs or datacenter in dcs:
            out += parse_rules(TEMPLATES["builtin/service"].render(ident["ServiceName"]),
                               policy=f"{origin} service identity {ident['ServiceName']}")
    for ident in doc.get("NodeIdentities") or []:
        if ident["Datacenter"] == datacenter:
            out += parse_rules(TEMPLATES["builtin/node"].render(ident["NodeName"]),
                               policy=f"{origin} node identity {ident['NodeName']}")
    for entry in doc.get("TemplatedPolicies") or []:
        dcs = entry.get("Datacenters") or []
        if not dcs or datacenter in dcs:
            name = (entry.get("TemplateVariables") or {}).get("Name", "")
            out += parse_rules(TEMPLATES[entry["TemplateName"]].render(name),
                               policy=f"{origin} templated policy {entry['TemplateName']}")
    return out


# -- request bodies -----------------------------------------------------------------------

def parse_policy_request(body: Any) -> dict[str, Any]:
    """A policy create/update body -> {"ID"?, "Name", "Description", "Rules", "Datacenters"}."""
    doc = _normalize(body, POLICY_SHAPE, "Policy")
    errors: list[str] = []
    _refuse_enterprise(doc, errors)
    name = doc.get("Name")
    if not isinstance(name, str) or not name:
        errors.append("Name: missing; a policy needs a name")
    elif not _POLICY_NAME.match(name):
        errors.append(f"Name: invalid policy name {name!r}: use letters, digits, '-' and '_' (up to 128)")
    rules = doc.get("Rules") or ""
    if not isinstance(rules, str):
        errors.append("Rules: must be a string of HCL or JSON rules")
    raise_if(errors)
    parse_rules(rules)  # raises with the line and the word
    out = {"Name": name, "Description": _text(doc, "Description"), "Rules": rules,
           "Datacenters": _strings(doc, "Datacenters")}
    if doc.get("ID"):
        out["ID"] = _uuid(doc["ID"], "ID")
    return out


def parse_role_request(body: Any) -> dict[str, Any]:
    doc = _normalize(body, ROLE_SHAPE, "Role")
    errors: list[str] = []
    _refuse_enterprise(doc, errors)
    name = doc.get("Name")
    if not isinstance(name, str) or not name:
        errors.append("Name: missing; a role needs a name")
    elif not _ROLE_NAME.match(name):
        errors.append(f"Name: invalid role name {name!r}: use letters, digits, '-' and '_' (up to 256)")
    out = {"Name": name, "Description": _text(doc, "Description"), **_identities(doc, errors, roles=False)}
    raise_if(errors)
    if doc.get("ID"):
        out["ID"] = _uuid(doc["ID"], "ID")
    return out


def parse_token_request(body: Any, *, now: datetime) -> dict[str, Any]:
    """A token create/update body, validated. Links are still by ID or Name (resolved later)."""
    doc = _normalize(body if body is not None else {}, TOKEN_SHAPE, "Token")
    errors: list[str] = []
    _refuse_enterprise(doc, errors)
    if doc.get("AuthMethod"):
        errors.append("AuthMethod: auth methods (login) are not supported by Tether")
    out: dict[str, Any] = {"Description": _text(doc, "Description"), "Local": bool(doc.get("Local", False)),
                           **_identities(doc, errors, roles=True)}
    for field in ("AccessorID", "SecretID"):
        if doc.get(field):
            try:
                out[field] = _uuid(doc[field], field)
            except InvalidInput as exc:
                errors.append(exc.message)
    ttl, when = doc.get("ExpirationTTL"), doc.get("ExpirationTime")
    if ttl and when:
        errors.append("ExpirationTTL and ExpirationTime: give one or the other, not both")
    elif ttl:
        try:
            seconds = parse_duration(str(ttl), field="ExpirationTTL") if isinstance(ttl, str) else float(ttl) / 1e9
        except InvalidInput as exc:
            errors.append(exc.message)
        else:
            if not MIN_EXPIRATION_TTL <= seconds <= MAX_EXPIRATION_TTL:
                errors.append(f"ExpirationTTL: {ttl} must be between 1m and 24h")
            else:
                out["ExpirationTime"] = format_time(now + timedelta(seconds=seconds))
    elif when:
        try:
            parsed = parse_time(when)
        except InvalidInput as exc:
            errors.append(exc.message)
        else:
            if parsed <= now:
                errors.append(f"ExpirationTime: {when} is in the past")
            out["ExpirationTime"] = format_time(parsed)
    raise_if(errors)
    return out


def _identities(doc: dict[str, Any], errors: list[str], *, roles: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kinds = ("Policies", "Roles") if roles else ("Policies",)
    for kind in kinds:
        links = []
        for i, link in enumerate(doc.get(kind) or []):
            if not (link.get("ID") or link.get("Name")):
                errors.append(f"{kind}[{i}]: give the ID or the Name of the {kind[:-1].lower().replace('ie', 'y')}")
                continue
            links.append({k: link[k] for k in ("ID", "Name") if link.get(k)})
        out[kind] = links
    services = []
    for i, ident in enumerate(doc.get("ServiceIdentities") or []):
        name = ident.get("ServiceName")
        if not isinstance(name, str) or not _IDENTITY_NAME.match(name) or len(name) > 256:
            errors.append(f"ServiceIdentities[{i}].ServiceName: {name!r} is not a valid service name")
            continue
        services.append({"ServiceName": name, **({"Datacenters": ident["Datacenters"]} if ident.get("Datacenters")
                                                  else {})})
    out["ServiceIdentities"] = services
    nodes = []
    for i, ident in enumerate(doc.get("NodeIdentities") or []):
        name, dc = ident.get("NodeName"), ident.get("Datacenter")
        if not isinstance(name, str) or not _IDENTITY_NAME.match(name.lower()) or len(name) > 256:
            errors.append(f"NodeIdentities[{i}].NodeName: {name!r} is not a valid node name")
        elif not isinstance(dc, str) or not dc:
            errors.append(f"NodeIdentities[{i}].Datacenter: required (the node identity's datacenter)")
        else:
            nodes.append({"NodeName": name, "Datacenter": dc})
    out["NodeIdentities"] = nodes
    templated = []
    for i, entry in enumerate(doc.get("TemplatedPolicies") or []):
        template = TEMPLATES.get(entry.get("TemplateName") or "")
        if template is None:
            errors.append(f"TemplatedPolicies[{i}].TemplateName: unknown templated policy "
                          f"{entry.get('TemplateName')!r}; known: {', '.join(TEMPLATES)}")
            continue
        variables = entry.get("TemplateVariables") or {}
        if template.needs_name and not variables.get("Name"):
            errors.append(f"TemplatedPolicies[{i}].TemplateVariables.Name: required by {template.name}")
            continue
        templated.append({"TemplateName": template.name,
                          **({"TemplateVariables": {"Name": variables["Name"]}} if template.needs_name else {}),
                          **({"Datacenters": entry["Datacenters"]} if entry.get("Datacenters") else {})})
    out["TemplatedPolicies"] = templated
    return out


def _normalize(body: Any, shape: Shape, what: str) -> dict[str, Any]:
    errors: list[str] = []
    doc = normalize(body, shape, what, errors)
    raise_if(errors)
    return {k: v for k, v in doc.items() if k not in _READ_ONLY}


def _refuse_enterprise(doc: dict[str, Any], errors: list[str]) -> None:
    for field in ("Namespace", "Partition"):
        if doc.get(field) not in (None, "", "default"):
            errors.append(f"{field}: {doc[field]!r}: namespaces and partitions are Consul Enterprise features")


def _text(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field) or ""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be a string")
    return value


def _strings(doc: dict[str, Any], field: str) -> list[str]:
    value = doc.get(field) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{field}: must be a list of strings")
    return value


def _uuid(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a UUID") from None


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise InvalidInput(f"ExpirationTime: {text!r} is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"ExpirationTime: {text!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_time(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
