"""`tether delete -f FILE`: the API deletes that undo what each document of FILE applied. Pure.

A document names its object by kind, namespace and name, as with kubectl; this maps it to
(what, route, query) triples. Kinds with nothing to delete (mesh-wide settings) and
documents that name nothing are InvalidInput, raised before any delete is sent.
"""

from __future__ import annotations

from typing import Any

from tether.core.errors import InvalidInput
from tether.core.policy_linkerd import LINKERD_KINDS, NAMESPACE_KIND

DeleteRequest = tuple[str, str, dict[str, Any]]


def delete_requests(doc: object) -> list[DeleteRequest]:
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise InvalidInput("delete: every document needs apiVersion, kind and metadata.name")
    kind, group = doc["kind"], str(doc.get("apiVersion", "")).split("/")[0]
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if group == "policy.linkerd.io" and kind in LINKERD_KINDS and name:
        return [(f"{kind} {ns}/{name}", f"/v1/tether/policy/linkerd/{kind}/{ns}/{name}", {})]
    if doc.get("apiVersion") == "v1" and kind == NAMESPACE_KIND and name:  # its default inbound policy
        return [(f"Namespace {name} (its default inbound policy)", f"/v1/tether/policy/linkerd/{kind}/{name}/{name}", {})]
    if group == "tether.dev" and kind == "ServerPolicy" and spec.get("service"):
        port = spec.get("port")
        scope = f"{spec['service']}:{port}" if port else f"{spec['service']} (all ports)"
        return [(f"server policy {scope}", f"/v1/tether/policy/{spec['service']}", {"port": port} if port else {})]
    if group == "tether.dev" and kind == "ServiceIntentions" and spec.get("destination"):
        dst = spec["destination"]
        return [(f"intention {s.get('name')} -> {dst}", "/v1/connect/intentions/exact",
                 {"source": s.get("name"), "destination": dst}) for s in spec.get("sources") or () if isinstance(s, dict)]
    if name and ((group == "tether.dev" and kind == "ExternalService") or (group == "networking.istio.io" and kind == "ServiceEntry")):
        entry = name if group == "tether.dev" or ns == "default" else f"{name}.{ns}"
        return [(f"external service {entry}", f"/v1/tether/external-services/{entry}", {})]
    if group == "security.istio.io" and kind == "AuthorizationPolicy" and name:
        return [(f"AuthorizationPolicy {ns}/{name} (Istio)", f"/v1/tether/policy/istio/{ns}/{name}", {})]
    if group == "networking.istio.io" and kind == "DestinationRule" and name:
        return [(f"DestinationRule {ns}/{name}", f"/v1/tether/destination-rules/{ns}/{name}", {})]
    if kind in ("MeshPolicy", "OutboundPolicy"):
        raise InvalidInput(f"delete: {kind} holds mesh-wide settings, which are not deleted; apply the values you want")
    raise InvalidInput(f"delete: {kind} {name or '?'} ({doc.get('apiVersion')}) is nothing `tether apply` stores")
