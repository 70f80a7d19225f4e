"""Parsing `-store etcd://host:port,host:port?prefix=/tether/` (pure: no I/O).

The URL names every etcd member the server may talk to (one gRPC channel fails over
between them) and the key prefix under which this Tether cluster keeps its documents, so
several clusters (or other programs) can share one etcd. TLS to etcd: `ca`, `cert` and
`key` query parameters name PEM files (all three for client certificates; `ca` alone for
server-verified TLS).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qs

from tether.core.errors import InvalidInput

DEFAULT_PREFIX = "/tether/"
_PARAMS = {"prefix", "ca", "cert", "key"}


@dataclass(frozen=True)
class EtcdTarget:
    endpoints: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def describe(self) -> str:
        """The endpoints as the user wrote them, for error messages."""
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)

    def grpc_target(self, resolved: tuple[tuple[str, int], ...]) -> str:
        """One gRPC target listing every member (pick_first fails over between them).

        gRPC's static list takes addresses of one family, so names are resolved first."""
        v6 = [":" in h for h, _ in resolved]
        if any(v6) and not all(v6):
            raise InvalidInput(f"-store: etcd endpoints {self.describe()} mix IPv4 and IPv6; use one family")
        if all(v6):
            return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in resolved)
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in resolved)


def is_etcd_url(value: str) -> bool:
    return value.startswith("etcd://")


def parse_etcd_url(value: str) -> EtcdTarget:
    """`etcd://h:p[,h:p...][?prefix=P&ca=F&cert=F&key=F]` -> EtcdTarget, or InvalidInput naming the part."""
    if not is_etcd_url(value):
        raise InvalidInput(f"-store: {value!r} is not an etcd URL; use etcd://host:port[,host:port...]")
    rest = value[len("etcd://"):]
    hosts, _, query = rest.partition("?")
    hosts = hosts.rstrip("/")
    if not hosts:
        raise InvalidInput("-store: etcd:// needs at least one host:port")
    endpoints = tuple(_endpoint(part) for part in hosts.split(","))
    params = parse_qs(query, keep_blank_values=True, strict_parsing=False) if query else {}
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise InvalidInput(f"-store: unknown etcd option {unknown[0]!r}; known: {', '.join(sorted(_PARAMS))}")
    for name, values in params.items():
        if len(values) != 1 or not values[0]:
            raise InvalidInput(f"-store: etcd option {name!r} needs exactly one non-empty value")
    one = {name: values[0] for name, values in params.items()}
    prefix = one.get("prefix", DEFAULT_PREFIX)
    if not prefix.endswith("/"):
        raise InvalidInput(f"-store: etcd prefix {prefix!r} must end with '/' (so it is a directory of its own)")
    cert, key = one.get("cert"), one.get("key")
    if (cert is None) != (key is None):
        raise InvalidInput("-store: etcd client certificates need both cert= and key=")
    if cert is not None and "ca" not in one:
        raise InvalidInput("-store: etcd client certificates need ca= (the CA that signed etcd's certificate)")
    return EtcdTarget(endpoints=endpoints, prefix=prefix, ca_file=one.get("ca"), cert_file=cert, key_file=key)


def _endpoint(part: str) -> tuple[str, int]:
    # accept http://h:p too, as etcdctl's --endpoints does
    for scheme in ("http://", "https://"):
        if part.startswith(scheme):
            part = part[len(scheme):]
    if part.startswith("["):
        host, sep, port = part[1:].partition("]:")
        if not sep:
            raise InvalidInput(f"-store: etcd endpoint {part!r}: write IPv6 as [addr]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInput(f"-store: etcd endpoint {part!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = part.rpartition(":")
        if not sep or not host:
            raise InvalidInput(f"-store: etcd endpoint {part!r} needs host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"-store: etcd endpoint {part!r}: port must be 1-65535")
    return host, int(port)

