"""Service and check definitions in Consul's shape: parsing and validation.

`parse_service_definition(body)` accepts what `PUT /v1/agent/service/register` and a
`{"service": {...}}` definition file accept (CamelCase, snake_case or any casing), and
returns a validated, frozen `ServiceDefinition`. Expansion into catalog instances
(sidecar defaults, checks) lives in core/registration.py.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tether.core.duration import parse_duration
from tether.core.errors import InvalidInput
from tether.core.named_ports import port_meta_problem
from tether.core.spiffe import validate_namespace, validate_service_name
from tether.core.normalize import OPAQUE, Shape, normalize, pydantic_errors, raise_if


_ADDRESS = Shape({"Address": None, "Port": None})
_CHECK_FIELDS = {
    "CheckID": None, "Name": None, "Notes": None, "Status": None, "ServiceID": None,
    "Interval": None, "Timeout": None, "TTL": None, "TCP": None, "HTTP": None, "Method": None,
    "Header": OPAQUE, "Body": None, "TLSSkipVerify": None, "TLSServerName": None,
    "DeregisterCriticalServiceAfter": None, "AliasService": None, "AliasNode": None,
    "SuccessBeforePassing": None, "FailuresBeforeCritical": None, "FailuresBeforeWarning": None,
    # Recognised so that the error can say "not supported" instead of "unknown field".
    "Args": None, "GRPC": None, "GRPCUseTLS": None, "DockerContainerID": None, "Shell": None,
    "H2PING": None, "UDP": None, "OSService": None, "Script": None,
}
CHECK_SHAPE = Shape(_CHECK_FIELDS, aliases={"ID": "CheckID", "ScriptArgs": "Args"})
UPSTREAM_SHAPE = Shape({
    "DestinationType": None, "DestinationName": None, "DestinationNamespace": None,
    "DestinationPartition": None, "DestinationPeer": None, "Datacenter": None,
    "LocalBindAddress": None, "LocalBindPort": None, "LocalBindSocketPath": None,
    "LocalBindSocketMode": None, "Config": OPAQUE, "MeshGateway": OPAQUE, "CentrallyConfigured": None,
})
PROXY_SHAPE = Shape({
    "DestinationServiceName": None, "DestinationServiceID": None, "LocalServiceAddress": None,
    "LocalServicePort": None, "LocalServiceSocketPath": None, "Mode": None,
    "TransparentProxy": OPAQUE, "Config": OPAQUE, "Upstreams": [UPSTREAM_SHAPE],
    "MeshGateway": OPAQUE, "Expose": OPAQUE,
})
# Consul 1.2's managed proxy: {"connect": {"proxy": {"exec_mode", "command", "config"}}}.
MANAGED_PROXY_SHAPE = Shape({"ExecMode": None, "Command": None, "Config": OPAQUE, "Upstreams": [UPSTREAM_SHAPE]})
_SERVICE_FIELDS: dict[str, Any] = {
    "ID": None, "Name": None, "Tags": None, "Address": None, "TaggedAddresses": {"*": _ADDRESS},
    "Meta": OPAQUE, "Port": None, "SocketPath": None, "Kind": None, "Proxy": PROXY_SHAPE,
    "Check": CHECK_SHAPE, "Checks": [CHECK_SHAPE], "EnableTagOverride": None, "Weights": OPAQUE,
    "Namespace": None, "Partition": None, "Locality": OPAQUE,
}
SERVICE_SHAPE = Shape(_SERVICE_FIELDS)
SIDECAR_SHAPE = Shape(dict(_SERVICE_FIELDS))
CONNECT_SHAPE = Shape({"Native": None, "SidecarService": SIDECAR_SHAPE, "Proxy": MANAGED_PROXY_SHAPE})
SERVICE_SHAPE.fields["Connect"] = CONNECT_SHAPE
SIDECAR_SHAPE.fields["Connect"] = Shape({"Native": None})  # no sidecar of a sidecar

_UNSUPPORTED_CHECKS = ("Args", "GRPC", "DockerContainerID", "H2PING", "UDP", "OSService", "Script")
Port = Field(default=0, ge=0, le=65535)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckDefinition(_Model):
    CheckID: str = ""
    Name: str = ""
    Notes: str = ""
    Status: Literal["", "passing", "warning", "critical"] = ""
    ServiceID: str = ""
    Interval: str = ""
    Timeout: str = ""
    TTL: str = ""
    TCP: str = ""
    HTTP: str = ""
    Method: str = ""
    Header: dict[str, list[str]] = {}
    Body: str = ""
    TLSSkipVerify: bool = False
    TLSServerName: str = ""
    DeregisterCriticalServiceAfter: str = ""
    AliasService: str = ""
    AliasNode: str = ""
    SuccessBeforePassing: int = Field(default=0, ge=0)
    FailuresBeforeCritical: int = Field(default=0, ge=0)
    FailuresBeforeWarning: int = Field(default=0, ge=0)

    @property
    def type(self) -> str:
        for kind, value in (("ttl", self.TTL), ("tcp", self.TCP), ("http", self.HTTP), ("alias", self.AliasService)):
            if value:
                return kind
        return ""


class Upstream(_Model):
    DestinationType: Literal["service", "prepared_query"] = "service"
    DestinationName: str
    DestinationNamespace: str = ""
    DestinationPartition: str = ""
    DestinationPeer: str = ""
    Datacenter: str = ""
    LocalBindAddress: str = ""
    LocalBindPort: int = Port
    LocalBindSocketPath: str = ""
    LocalBindSocketMode: str = ""
    Config: dict[str, Any] = {}
    MeshGateway: dict[str, Any] = {}
    CentrallyConfigured: bool = False


class ProxyDefinition(_Model):
    DestinationServiceName: str = ""
    DestinationServiceID: str = ""
    LocalServiceAddress: str = ""
    LocalServicePort: int = Port
    LocalServiceSocketPath: str = ""
    Mode: Literal["", "direct", "transparent"] = ""
    TransparentProxy: dict[str, Any] = {}
    Config: dict[str, Any] = {}
    Upstreams: tuple[Upstream, ...] = ()
    MeshGateway: dict[str, Any] = {}
    Expose: dict[str, Any] = {}


class ManagedProxy(_Model):
    ExecMode: Literal["", "daemon", "script"] = ""
    Command: tuple[str, ...] = ()
    Config: dict[str, Any] = {}
    Upstreams: tuple[Upstream, ...] = ()


class ConnectDefinition(_Model):
    Native: bool = False
    SidecarService: "ServiceDefinition | None" = None
    Proxy: ManagedProxy | None = None


ServiceKind = Literal["", "connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway"]


class ServiceDefinition(_Model):
    ID: str = ""
    Name: str = ""
    Tags: tuple[str, ...] = ()
    Address: str = ""
    TaggedAddresses: dict[str, dict[str, Any]] = {}
    Meta: dict[str, str] = {}
    Port: int = Port
    SocketPath: str = ""
    Kind: ServiceKind = ""
    Proxy: ProxyDefinition | None = None
    Connect: ConnectDefinition | None = None
    Check: CheckDefinition | None = None
    Checks: tuple[CheckDefinition, ...] = ()
    EnableTagOverride: bool = False
    Weights: dict[str, int] = {}
    Namespace: str = ""
    Partition: str = ""
    Locality: dict[str, Any] = {}

    @field_validator("Meta")
    @classmethod
    def _meta_limits(cls, meta: dict[str, str]) -> dict[str, str]:
        # Consul's limits: 64 pairs, keys up to 128 chars, values up to 512 chars.
        if len(meta) > 64:
            raise ValueError("at most 64 Meta pairs are allowed")
        for k, v in meta.items():
            if len(k) > 128 or len(v) > 512:
                raise ValueError(f"Meta {k[:40]!r}: keys are limited to 128 and values to 512 characters")
            if (problem := port_meta_problem(k, v)) is not None:  # a named port (core/named_ports.py)
                raise ValueError(problem)
        return meta


ConnectDefinition.model_rebuild()


def parse_service_definition(body: Any, *, path: str = "Service") -> ServiceDefinition:
    """Validate a registration body; raise InvalidInput listing every problem."""
    errors: list[str] = []
    data = normalize(body, SERVICE_SHAPE, path, errors)
    connect = data.get("Connect") if isinstance(data, dict) else None
    if isinstance(connect, dict) and isinstance(connect.get("Proxy"), dict):
        _lift_managed_upstreams(connect["Proxy"], f"{path}.Connect.Proxy", errors)
    for where, check in _check_dicts(data, path):
        _strip_unsupported(check, where, errors)
    raise_if(errors)
    try:
        definition = ServiceDefinition.model_validate(data)
    except ValidationError as exc:
        raise_if(pydantic_errors(exc, path))
        raise  # unreachable: pydantic always reports at least one error
    check_service_definition(definition, path, errors)
    raise_if(errors)
    return definition


def _lift_managed_upstreams(proxy: dict[str, Any], path: str, errors: list[str]) -> None:
    """Consul 1.2 put upstreams inside the opaque proxy config; give them their real shape."""
    config = proxy.get("Config") or {}
    if isinstance(config, dict) and "upstreams" in config:
        config = dict(config)
        upstreams = config.pop("upstreams")
        if not isinstance(upstreams, list):
            errors.append(f"{path}.Config.upstreams: expected a list")
            return
        proxy["Upstreams"] = [
            normalize(u, UPSTREAM_SHAPE, f"{path}.Config.upstreams[{i}]", errors) for i, u in enumerate(upstreams)
        ]
        proxy["Config"] = config


def check_service_definition(d: ServiceDefinition, path: str, errors: list[str]) -> None:
    """Cross-field rules pydantic cannot express."""
    if not d.Name:
        errors.append(f"{path}.Name: missing (every service needs a name)")
    else:
        # Names end up in SPIFFE IDs, SNI and DNS, so a service name is one DNS label.
        try:
            validate_service_name(d.Name)
        except InvalidInput as exc:
            errors.append(f"{path}.Name: {exc}")
    if d.Namespace:  # it is part of the service's SPIFFE ID (core/namespaces.py)
        try:
            validate_namespace(d.Namespace)
        except InvalidInput as exc:
            errors.append(f"{path}.Namespace: {exc}")
    if d.ID and ("/" in d.ID or len(d.ID) > 255):
        errors.append(f"{path}.ID: {d.ID!r} must be at most 255 characters without '/'")
    if d.Kind == "connect-proxy":
        if d.Proxy is None or not d.Proxy.DestinationServiceName:
            errors.append(f"{path}.Proxy.DestinationServiceName: required for a connect-proxy")
    elif d.Proxy is not None and d.Kind == "":
        errors.append(f"{path}.Proxy: only allowed with Kind connect-proxy or a gateway kind")
    if d.Connect and d.Connect.SidecarService and d.Connect.Proxy:
        errors.append(f"{path}.Connect: give SidecarService or Proxy, not both")
    if d.Connect and d.Connect.SidecarService:
        sidecar = d.Connect.SidecarService
        if sidecar.ID:
            errors.append(f"{path}.Connect.SidecarService.ID: cannot be set (it is always <id>-sidecar-proxy)")
        if sidecar.Kind not in ("", "connect-proxy"):
            errors.append(f"{path}.Connect.SidecarService.Kind: is always connect-proxy")
        if sidecar.Namespace not in ("", d.Namespace or "default"):
            errors.append(f"{path}.Connect.SidecarService.Namespace: a sidecar is in its service's namespace "
                          f"({d.Namespace or 'default'!r})")
    upstreams = d.Proxy.Upstreams if d.Proxy else ()
    if d.Connect and d.Connect.SidecarService and d.Connect.SidecarService.Proxy:
        upstreams += d.Connect.SidecarService.Proxy.Upstreams
    if d.Connect and d.Connect.Proxy:
        upstreams += d.Connect.Proxy.Upstreams
    for where, proxy_config in _proxy_configs(d, path):
        check_listener_config(proxy_config, f"{where}.Config", errors)
    for up in upstreams:
        if not up.LocalBindPort and not up.LocalBindSocketPath:
            errors.append(f"{path}: upstream {up.DestinationName!r} needs LocalBindPort (1-65535)")
    if d.Check:
        check_check_definition(d.Check, f"{path}.Check", errors, in_service=True)
    for i, check in enumerate(d.Checks):
        check_check_definition(check, f"{path}.Checks[{i}]", errors, in_service=True)


def _proxy_configs(d: ServiceDefinition, path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    if d.Proxy is not None:
        found.append((f"{path}.Proxy", d.Proxy.Config))
    if d.Connect and d.Connect.SidecarService and d.Connect.SidecarService.Proxy:
        found.append((f"{path}.Connect.SidecarService.Proxy", d.Connect.SidecarService.Proxy.Config))
    if d.Connect and d.Connect.Proxy:
        found.append((f"{path}.Connect.Proxy", d.Connect.Proxy.Config))
    return found


def check_listener_config(config: dict[str, Any], path: str, errors: list[str]) -> None:
    """Consul's `bind_port` / `bind_address` proxy keys: where the public listener goes."""
    port = config.get("bind_port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        errors.append(f"{path}.bind_port: {port!r} must be a TCP port (1-65535)")
    address = config.get("bind_address")
    if address is not None:
        try:
            if not isinstance(address, str):
                raise ValueError(address)
            ipaddress.ip_address(address)
        except ValueError:
            errors.append(f"{path}.bind_address: {address!r} must be an IP address (e.g. 0.0.0.0)")


def check_check_definition(c: Any, path: str, errors: list[str], *, in_service: bool = False) -> None:
    """A check must be exactly one supported kind, with an interval where it polls."""
    kinds = [k for k in ("TTL", "TCP", "HTTP", "AliasService") if getattr(c, k)]
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        errors.append(f"{path}: a check needs exactly one of TTL, TCP, HTTP or AliasService (got {what})")
    for key in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter"):
        value = getattr(c, key)
        if value:
            try:
                if parse_duration(value, field=f"{path}.{key}") <= 0:
                    errors.append(f"{path}.{key}: must be positive, got {value!r}")
            except InvalidInput as exc:
                errors.append(str(exc))
    if (c.TCP or c.HTTP) and not c.Interval:
        errors.append(f"{path}.Interval: required for TCP and HTTP checks (e.g. \"10s\")")
    if not in_service and not c.Name:
        errors.append(f"{path}.Name: missing")


def _check_dicts(service: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every check object inside a normalised service body (its sidecar's included)."""
    if not isinstance(service, dict):
        return []
    found = []
    if isinstance(service.get("Check"), dict):
        found.append((f"{path}.Check", service["Check"]))
    for i, check in enumerate(service.get("Checks") or []):
        if isinstance(check, dict):
            found.append((f"{path}.Checks[{i}]", check))
    connect = service.get("Connect")
    if isinstance(connect, dict) and isinstance(connect.get("SidecarService"), dict):
        found += _check_dicts(connect["SidecarService"], f"{path}.Connect.SidecarService")
    return found


def _strip_unsupported(check: dict[str, Any], path: str, errors: list[str]) -> None:
    """Known Consul check kinds Tether does not run get a clear error, not 'unknown field'."""
    for key in _UNSUPPORTED_CHECKS:
        if check.pop(key, None):
            errors.append(f"{path}.{key}: {key} checks are not supported by Tether (use TCP, HTTP, TTL or alias)")
    for key in ("GRPCUseTLS", "Shell"):
        check.pop(key, None)


def parse_check_definition(body: Any, *, path: str = "Check") -> CheckDefinition:
    errors: list[str] = []
    data = normalize(body, CHECK_SHAPE, path, errors)
    if isinstance(data, dict):
        _strip_unsupported(data, path, errors)
    raise_if(errors)
    try:
        check = CheckDefinition.model_validate(data)
    except ValidationError as exc:
        raise_if(pydantic_errors(exc, path))
        raise
    check_check_definition(check, path, errors)
    raise_if(errors)
    return check
