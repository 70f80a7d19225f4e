"""Consul's maintenance mode as checks (pure): a critical check the agent does not run.

Node maintenance is the node check `_node_maintenance`; service maintenance is the service
check `_service_maintenance:<id>`. Being critical, they take the node's (or the service's)
instances out of every `?passing` answer and DNS, until maintenance is disabled.
"""

from __future__ import annotations

from typing import Any

from tether.core.errors import InvalidInput
from tether.core.health import CRITICAL

NODE_MAINTENANCE = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"


def parse_enable(raw: str | None) -> bool:
    """The `enable` query parameter, required, a Go boolean as Consul parses it."""
    if raw is None or raw == "":
        raise InvalidInput("Missing value for enable")
    value = raw.lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise InvalidInput(f"Invalid value for enable: {raw!r}")


def node_maintenance_check(node: str, reason: str) -> dict[str, Any]:
    notes = reason or ("Maintenance mode is enabled for this node, but no reason was provided. "
                       "This is a default message.")
    return _passive(node, NODE_MAINTENANCE, "Node Maintenance Mode", notes, None)


def service_maintenance_check(node: str, service: dict[str, Any], reason: str) -> dict[str, Any]:
    notes = reason or ("Maintenance mode is enabled for this service, but no reason was provided. "
                       "This is a default message.")
    return _passive(node, SERVICE_MAINTENANCE_PREFIX + service["ID"], "Service Maintenance Mode", notes, service)


def _passive(node: str, check_id: str, name: str, notes: str, service: dict[str, Any] | None) -> dict[str, Any]:
    return {"Node": node, "CheckID": check_id, "Name": name, "Status": CRITICAL, "Notes": notes, "Output": "",
            "ServiceID": service["ID"] if service else "", "ServiceName": service["Service"] if service else "",
            "ServiceTags": list(service["Tags"]) if service else [], "Type": "", "Definition": {}}
