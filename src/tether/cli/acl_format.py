"""How `tether acl ...` prints tokens, policies and roles: Consul's "pretty" layout.

    AccessorID:       986193b5-...
    SecretID:         ec15675e-...
    Description:      web's token
    Local:            false
    Create Time:      2026-12-02 11:28:30.982445 +0000 UTC
    Service Identities:
       web (Datacenters: all)

Pure functions from the API's JSON to text, so tests can hold them to Consul's layout.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _time(text: str) -> str:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return text or ""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def _identities(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if doc.get("Policies"):
        lines.append("Policies:")
        lines += [f"   {p['ID']} - {p.get('Name', '')}" for p in doc["Policies"]]
    if doc.get("Roles"):
        lines.append("Roles:")
        lines += [f"   {r['ID']} - {r.get('Name', '')}" for r in doc["Roles"]]
    if doc.get("ServiceIdentities"):
        lines.append("Service Identities:")
        for ident in doc["ServiceIdentities"]:
            dcs = ", ".join(ident.get("Datacenters") or []) or "all"
            lines.append(f"   {ident['ServiceName']} (Datacenters: {dcs})")
    if doc.get("NodeIdentities"):
        lines.append("Node Identities:")
        lines += [f"   {n['NodeName']} (Datacenter: {n['Datacenter']})" for n in doc["NodeIdentities"]]
    if doc.get("TemplatedPolicies"):
        lines.append("Templated Policies:")
        for t in doc["TemplatedPolicies"]:
            lines.append(f"   {t['TemplateName']}")
            name = (t.get("TemplateVariables") or {}).get("Name")
            if name:
                lines.append(f"      Name: {name}")
            lines.append(f"      Datacenters: {', '.join(t.get('Datacenters') or []) or 'all'}")
    return lines


def format_token(token: dict[str, Any]) -> str:
    lines = [f"AccessorID:       {token['AccessorID']}", f"SecretID:         {token.get('SecretID', '')}",
             f"Description:      {token.get('Description', '')}",
             f"Local:            {str(token.get('Local', False)).lower()}",
             f"Create Time:      {_time(token.get('CreateTime', ''))}"]
    if token.get("ExpirationTime"):
        lines.append(f"Expiration Time:  {_time(token['ExpirationTime'])}")
    return "\n".join(lines + _identities(token))


def format_policy(policy: dict[str, Any]) -> str:
    lines = [f"ID:           {policy['ID']}", f"Name:         {policy['Name']}",
             f"Description:  {policy.get('Description', '')}",
             f"Datacenters:  {', '.join(policy.get('Datacenters') or [])}"]
    if "Rules" in policy:
        lines += ["Rules:", policy["Rules"].rstrip("\n")]
    return "\n".join(lines)


def format_role(role: dict[str, Any]) -> str:
    lines = [f"ID:           {role['ID']}", f"Name:         {role['Name']}",
             f"Description:  {role.get('Description', '')}"]
    return "\n".join(lines + _identities(role))


def parse_service_identity(text: str) -> dict[str, Any]:
    """'web' or 'web:dc1,dc2' -> a ServiceIdentity (Consul's -service-identity syntax)."""
    name, _, dcs = text.partition(":")
    out: dict[str, Any] = {"ServiceName": name}
    if dcs:
        out["Datacenters"] = [d for d in dcs.split(",") if d]
    return out


def parse_node_identity(text: str) -> dict[str, Any]:
    """'node1:dc1' -> a NodeIdentity; the datacenter is required (Consul's syntax)."""
    name, sep, dc = text.partition(":")
    if not sep or not name or not dc:
        from tether.core.errors import InvalidInput

        raise InvalidInput(f"-node-identity {text!r}: write it as NODE:DATACENTER, e.g. node1:dc1")
    return {"NodeName": name, "Datacenter": dc}
