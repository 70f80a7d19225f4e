"""The external-service registry model: enums and frozen values (pure).

Validation is in core/external_validate.py, the snapshot and the egress decision in
core/external.py (which re-exports these names, so callers import from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tether.core.hostmatch import is_wildcard


class Protocol(StrEnum):
    TCP = "TCP"
    TLS = "TLS"  # route on SNI without terminating


class Resolution(StrEnum):
    NONE = "NONE"  # forward to the original destination IP
    STATIC = "STATIC"  # forward to the listed endpoint IPs
    DNS = "DNS"  # resolve the endpoints' (or the hosts') names


class TlsMode(StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"


class OutboundMode(StrEnum):
    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


class TargetKind(StrEnum):
    ORIGINAL_DST = "ORIGINAL_DST"
    STATIC = "STATIC"
    DNS = "DNS"


MESH_EXTERNAL = "MESH_EXTERNAL"
#: Istio's ServiceEntry limit on hosts, kept so Istio documents behave the same.
MAX_HOSTS = 256
PROTOCOL_HINTS = frozenset({"postgres"})


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str
    protocol: Protocol = Protocol.TCP
    target_port: int | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # an IP; a DNS name only with resolution DNS
    ports: tuple[tuple[str, int], ...] = ()  # port name -> number on this endpoint

    def port_for(self, port: ServicePort) -> int:
        for name, number in self.ports:
            if name == port.name:
                return number
        return port.target_port or port.number


@dataclass(frozen=True, slots=True)
class TlsOrigination:
    mode: TlsMode = TlsMode.DISABLE
    ca_certificates: str | None = None  # file path; None = the system trust store
    client_certificate: str | None = None
    private_key: str | None = None  # path only: key material never enters the model
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExternalService:
    name: str
    hosts: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    addresses: tuple[str, ...] = ()  # CIDRs; a bare IP means /32 or /128
    resolution: Resolution = Resolution.NONE
    endpoints: tuple[Endpoint, ...] = ()
    location: str = MESH_EXTERNAL
    tls: TlsOrigination = TlsOrigination()
    protocol_hint: str | None = None  # "postgres": answer/perform SSLRequest around origination
    allowed_sources: tuple[str, ...] = ("*",)
    #: Mesh service name of the egress gateway this traffic must leave through (None: the
    #: sidecar connects directly). The gateway itself ignores it: it is the exit.
    egress_gateway: str | None = None

    def allows_source(self, source: str) -> bool:
        return "*" in self.allowed_sources or source in self.allowed_sources

    def origination_sni(self) -> str | None:
        """SNI (and verified name) for originated TLS: tls.sni, else the first exact host."""
        if self.tls.sni:
            return self.tls.sni
        return next((h for h in self.hosts if not is_wildcard(h)), None)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Mesh-wide mode plus per-source-service overrides. ALLOW_ANY is Istio's default."""

    mode: OutboundMode = OutboundMode.ALLOW_ANY
    overrides: tuple[tuple[str, OutboundMode], ...] = ()

    def mode_for(self, service: str) -> OutboundMode:
        for name, mode in self.overrides:
            if name == service:
                return mode
        return self.mode


@dataclass(frozen=True, slots=True)
class EgressTarget:
    """Where to send an allowed connection and how."""

    kind: TargetKind
    addresses: tuple[tuple[str, int], ...]  # (IP, or DNS name to resolve, port) in order of preference
    tls: TlsOrigination | None = None  # originate TLS with these settings; None = forward bytes as-is
    sni: str | None = None  # SNI to send when originating


@dataclass(frozen=True, slots=True)
class EgressDecision:
    allowed: bool
    entry: ExternalService | None
    target: EgressTarget | None
    reason: str
