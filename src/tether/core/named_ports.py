"""Named ports of a registration, by a Consul-compatible Meta convention.

A registration names a port with a Meta pair `tether-port-<name>: "<number>"`, e.g.

    {"Name": "voting-svc", "Port": 8080, "Meta": {"tether-port-grpc": "8080"}}

(Consul Meta keys allow letters, digits, `-` and `_`, so the convention works with any
Consul client). A Linkerd Server's `port: grpc` resolves against it: to every number the
service's instances give that name (policy_linkerd.resolve_linkerd). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PORT_META_PREFIX = "tether-port-"


def port_meta_problem(key: str, value: str) -> str | None:
    """Why a `tether-port-*` Meta value is not a port number, or None (checked at registration)."""
    if not key.startswith(PORT_META_PREFIX):
        return None
    if not key[len(PORT_META_PREFIX):]:
        return f"Meta {key!r}: name the port after {PORT_META_PREFIX!r}, e.g. {PORT_META_PREFIX}grpc"
    if not (value.isdigit() and 1 <= int(value) <= 65535):
        return f"Meta {key!r}: {value!r} must be a port number (1-65535), as in {PORT_META_PREFIX}grpc: \"8080\""
    return None


def named_ports(instances: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[int, ...]]:
    """{(service, port name): the sorted numbers its instances give that name}."""
    found: dict[tuple[str, str], set[int]] = {}
    for inst in instances:
        for key, value in (inst.get("Meta") or {}).items():
            if key.startswith(PORT_META_PREFIX) and port_meta_problem(key, str(value)) is None:
                found.setdefault((inst.get("Service", ""), key[len(PORT_META_PREFIX):]), set()).add(int(value))
    return {k: tuple(sorted(v)) for k, v in found.items()}
