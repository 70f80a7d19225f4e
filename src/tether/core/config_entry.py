"""Consul config entries (`/v1/config`) as views of Tether's own stores (pure).

A config entry is not a second copy of anything: `service-intentions` for a destination is
the set of intentions to it (the intentions API's store, one source of truth), read and
written through that store; `mesh`'s `TransparentProxy.MeshDestinationsOnly` is the mode of
Tether's outbound policy (true: REGISTRY_ONLY, false: ALLOW_ANY). Kinds that do not map
onto what Tether does yet are refused with a 400 naming the kind, and an unknown kind is a
400 too; nothing is stored unread.
"""

from __future__ import annotations

from typing import Any, Iterable

from tether.core.errors import InvalidInput
from tether.core.intentions import Intention, parse_intention

SERVICE_INTENTIONS = "service-intentions"
MESH = "mesh"
IMPLEMENTED = (SERVICE_INTENTIONS, MESH)
#: Consul's other kinds: known, not implemented by Tether yet (400 naming them, not "unknown").
NOT_YET = ("service-defaults", "proxy-defaults", "terminating-gateway", "service-resolver",
           "service-router", "service-splitter", "ingress-gateway", "api-gateway", "exported-services",
           "sameness-group", "jwt-provider", "control-plane-request-limit", "http-route", "tcp-route",
           "inline-certificate", "file-system-certificate", "bound-api-gateway", "registration")
#: A source of a service-intentions entry -> the intention field it is (Consul's mapping).
_SOURCE_FIELDS = {"name": "SourceName", "action": "Action", "description": "Description", "type": "SourceType",
                  "permissions": "Permissions", "namespace": "SourceNS", "partition": "SourcePartition",
                  "peer": "SourcePeer", "samenessgroup": "SourceSamenessGroup", "legacymeta": "Meta"}
_SOURCE_READ_ONLY = {"precedence", "legacyid", "legacycreatetime", "legacyupdatetime"}
_ENTRY_FIELDS = {"kind", "name", "sources", "meta", "namespace", "partition", "createindex", "modifyindex", "jwt"}


def check_kind(kind: str) -> None:
    if kind in IMPLEMENTED:
        return
    if kind in NOT_YET:
        raise InvalidInput(f"Kind: config entry kind {kind!r} is not implemented by Tether yet "
                           f"(implemented: {', '.join(IMPLEMENTED)})")
    raise InvalidInput(f"Kind: invalid config entry kind {kind!r}")


def parse_service_intentions(body: Any) -> tuple[str, list[Intention]]:
    """A service-intentions entry -> (destination, its intentions); every problem in one 400."""
    if not isinstance(body, dict):
        raise InvalidInput("Request decode failed: send a config entry object")
    fields = {str(k).lower(): v for k, v in body.items()}
    errors = [f"{k}: unknown field" for k in body if str(k).lower() not in _ENTRY_FIELDS]
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        errors.append("Name: missing (the destination service, or *)")
    if fields.get("meta"):
        errors.append("Meta: entry metadata is not supported by Tether (give each source LegacyMeta instead)")
    if fields.get("jwt"):
        errors.append("JWT: JWT validation is an L7 feature Tether does not have")
    for scope in ("namespace", "partition"):
        if fields.get(scope) not in (None, "", "default"):
            errors.append(f"{scope.capitalize()}: Tether has one namespace and partition (default)")
    sources = fields.get("sources") or []
    if not isinstance(sources, list):
        errors.append("Sources: expected a list")
        sources = []
    intentions, seen = [], set()
    for i, source in enumerate(sources):
        try:
            intention = parse_intention(_as_intention(source, name, f"Sources[{i}]"), path=f"Sources[{i}]")
        except InvalidInput as exc:
            errors.append(str(exc))
            continue
        if intention.source_name in seen:
            errors.append(f"Sources[{i}].Name: {intention.source_name!r} is listed twice")
        seen.add(intention.source_name)
        intentions.append(intention)
    if errors:
        raise InvalidInput("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))
    return name, intentions


def _as_intention(source: Any, destination: Any, path: str) -> dict[str, Any]:
    if not isinstance(source, dict):
        raise InvalidInput(f"{path}: expected an object")
    out: dict[str, Any] = {"DestinationName": destination}
    for key, value in source.items():
        folded = str(key).lower()
        if folded in _SOURCE_READ_ONLY:
            continue  # computed by Consul (and Tether): never taken from the request
        if folded not in _SOURCE_FIELDS:
            raise InvalidInput(f"{path}.{key}: unknown field")
        out[_SOURCE_FIELDS[folded]] = value
    return out


def format_service_intentions(destination: str, intentions: Iterable[Intention]) -> dict[str, Any]:
    """The entry for `destination` (its ModifyIndex: the newest of its intentions)."""
    found = sorted(intentions, key=lambda i: i.source_name)
    sources = [{"Name": i.source_name, "Action": i.action, "Precedence": i.precedence, "Type": i.source_type,
                "Description": i.description, **({"LegacyMeta": dict(i.meta)} if i.meta else {})} for i in found]
    return {"Kind": SERVICE_INTENTIONS, "Name": destination, "Sources": sources,
            "CreateIndex": min((i.create_index or 0 for i in found), default=0),
            "ModifyIndex": max((i.modify_index or 0 for i in found), default=0)}


_MESH_FIELDS = {"kind", "name", "transparentproxy", "createindex", "modifyindex", "namespace", "partition"}


def parse_mesh(body: Any) -> bool:
    """A mesh entry -> MeshDestinationsOnly. Its L7 and TLS settings (TLS, HTTP, Peering,
    AllowEnablingPermissiveMutualTLS, Meta) are refused: Tether has nothing they would set."""
    if not isinstance(body, dict):
        raise InvalidInput("Request decode failed: send a config entry object")
    fields = {str(k).lower(): (k, v) for k, v in body.items()}
    errors = [f"{k}: not supported by Tether's mesh entry (only TransparentProxy.MeshDestinationsOnly)"
              for folded, (k, _) in fields.items() if folded not in _MESH_FIELDS]
    name = fields.get("name", (None, "mesh"))[1]
    if name != MESH:
        errors.append(f"Name: the mesh entry is always named 'mesh', not {name!r}")
    tproxy = fields.get("transparentproxy", (None, {}))[1] or {}
    only = False
    if not isinstance(tproxy, dict):
        errors.append("TransparentProxy: expected an object")
    else:
        for key, value in tproxy.items():
            if str(key).lower() != "meshdestinationsonly":
                errors.append(f"TransparentProxy.{key}: unknown field")
            elif not isinstance(value, bool):
                errors.append("TransparentProxy.MeshDestinationsOnly: expected true or false")
            else:
                only = value
    if errors:
        raise InvalidInput("; ".join(errors[:5]))
    return only


def format_mesh(destinations_only: bool, create_index: int, modify_index: int) -> dict[str, Any]:
    return {"Kind": MESH, "Name": MESH, "TransparentProxy": {"MeshDestinationsOnly": destinations_only},
            "CreateIndex": create_index, "ModifyIndex": modify_index}
