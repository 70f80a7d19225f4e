"""Consul's response shapes, built from stored documents (pure formatting)."""

from __future__ import annotations

from typing import Any

from tether.core.namespaces import namespace_of

_SERVICE_FIELDS = ("ID", "Service", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "SocketPath",
                   "Weights", "EnableTagOverride", "Kind", "Proxy", "Connect", "Datacenter",
                   "CreateIndex", "ModifyIndex")


def agent_service(svc: dict[str, Any]) -> dict[str, Any]:
    """/v1/agent/services and /v1/health/*'s Service element."""
    out = {k: svc[k] for k in _SERVICE_FIELDS if k in svc}
    out.setdefault("Connect", {})
    out["Namespace"] = namespace_of(svc)  # Consul Enterprise's field; `default` for older documents
    return out


#: Fields /v1/agent/services leaves out when empty, as Consul's AgentService does (omitempty).
_OMITTED_WHEN_EMPTY = ("TaggedAddresses", "SocketPath", "Kind", "Connect", "Proxy")


def agent_services_element(svc: dict[str, Any]) -> dict[str, Any]:
    """One value of /v1/agent/services: AgentService without the empty optional fields."""
    return {k: v for k, v in agent_service(svc).items() if k not in _OMITTED_WHEN_EMPTY or v}


def catalog_service(node: dict[str, Any] | None, svc: dict[str, Any]) -> dict[str, Any]:
    """/v1/catalog/service/:name's flat element."""
    node = node or {"Node": svc["Node"]}
    return {
        "ID": node.get("ID", ""),
        "Node": svc["Node"],
        "Address": node.get("Address", ""),
        "Datacenter": node.get("Datacenter", svc.get("Datacenter", "")),
        "TaggedAddresses": node.get("TaggedAddresses", {}),
        "NodeMeta": node.get("Meta", {}),
        "ServiceKind": svc["Kind"],
        "ServiceID": svc["ID"],
        "ServiceName": svc["Service"],
        "ServiceTags": svc["Tags"],
        "ServiceAddress": svc["Address"],
        "ServiceTaggedAddresses": svc["TaggedAddresses"],
        "ServiceWeights": svc["Weights"],
        "ServiceMeta": svc["Meta"],
        "ServicePort": svc["Port"],
        "ServiceSocketPath": svc.get("SocketPath", ""),
        "ServiceEnableTagOverride": svc["EnableTagOverride"],
        "ServiceProxy": svc.get("Proxy", {}),
        "ServiceConnect": svc.get("Connect", {}),
        "Namespace": namespace_of(svc),
        "CreateIndex": svc["CreateIndex"],
        "ModifyIndex": svc["ModifyIndex"],
    }


def health_service(entry: dict[str, Any]) -> dict[str, Any]:
    return {"Node": entry["Node"], "Service": agent_service(entry["Service"]), "Checks": entry["Checks"]}
