"""Static JSON config of an egress proxy process (tests, benchmarks, hand-run gateways).

    {
      "service": "ratings",                       # our service: the source of sidecar decisions
      "tls": {"cert_file": "ratings.crt", "key_file": "ratings.key", "roots_file": "ca.pem",
              "spiffe_id": "spiffe://example.mesh/ns/default/dc/dc1/svc/ratings"},
      "outbound": "127.0.0.1:15001",              # the transparent listener (sidecar role)
      "gateway": "0.0.0.0:8443",                  # the egress gateway listener (gateway role)
      "egress_file": "egress.yaml",               # ExternalService / OutboundPolicy / ServiceEntry docs
      "mesh": [{"name": "egress-gateway", "spiffe_id": "spiffe://.../svc/egress-gateway",
                "instances": ["198.51.100.20:8443"], "virtual_ip": null}],
      "access_log": {"path": "-", "format": "text"},
      "admin": "127.0.0.1:19001",
      "connect_timeout_ms": 5000, "handshake_timeout_ms": 10000, "peek_timeout_ms": 1000,
      "max_pending_handshakes": 1024,             # the gateway listener's cap (core/admission.py)
      "loop": "uvloop"
    }

Relative paths are resolved against the config file's directory. Unknown keys are errors,
and every problem is reported at once (one InvalidInput).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.core.admission import DEFAULT_MAX_PENDING_HANDSHAKES
from tether.core.errors import InvalidInput, TetherError
from tether.core.external import EgressSnapshot, OutboundPolicy
from tether.core.external_yaml import parse_external_yaml
from tether.proxy.config import TlsFiles
from tether.proxy.egress.routes import MeshService
from tether.proxy.pool import Instance

_TOP = {"service", "tls", "outbound", "gateway", "egress_file", "mesh", "access_log", "admin",
        "connect_timeout_ms", "handshake_timeout_ms", "peek_timeout_ms", "max_pending_handshakes", "loop"}
_TLS = {"cert_file", "key_file", "roots_file", "spiffe_id", "chain_file"}
_MESH = {"name", "spiffe_id", "instances", "virtual_ip"}
LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class EgressConfig:
    service: str
    tls: TlsFiles
    egress_file: Path | None = None
    outbound: tuple[str, int] | None = None
    gateway: tuple[str, int] | None = None
    mesh: tuple[MeshService, ...] = ()
    access_log_path: str | None = None
    access_log_format: str = "json"
    admin: tuple[str, int] | None = None
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    peek_timeout: float = 1.0
    loop: str = "uvloop"
    max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES

    def load_registry(self) -> EgressSnapshot:
        """The egress file as a snapshot (an empty ALLOW_ANY registry without one)."""
        if self.egress_file is None:
            return EgressSnapshot.build(())
        try:
            text = self.egress_file.read_text()
        except OSError as e:
            raise InvalidInput(f"egress_file {self.egress_file}: cannot read: {e.strerror}") from None
        cfg = parse_external_yaml(text, source=str(self.egress_file))
        return EgressSnapshot.build(cfg.services, cfg.policy or OutboundPolicy())


def _hostport(value: Any, where: str, errs: list[str]) -> tuple[str, int] | None:
    if not isinstance(value, str) or ":" not in value:
        errs.append(f"{where}: expected \"host:port\", got {value!r}")
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        errs.append(f"{where}: {value!r} is not host:port with a port 0-65535")
        return None
    return host, int(port)


def _seconds(raw: dict, key: str, default: float, errs: list[str]) -> float:
    value = raw.get(key, default * 1000)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        errs.append(f"config.{key}: expected milliseconds > 0, got {value!r}")
        return default
    return value / 1000


def _unknown(obj: dict, allowed: set[str], where: str, errs: list[str]) -> None:
    errs += [f"{where}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})" for k in sorted(set(obj) - allowed)]


def _tls(raw: Any, base: Path, errs: list[str]) -> TlsFiles | None:
    if not isinstance(raw, dict):
        errs.append("config.tls: required, an object with cert_file, key_file, roots_file, spiffe_id")
        return None
    _unknown(raw, _TLS, "config.tls", errs)
    missing = [k for k in ("cert_file", "key_file", "roots_file", "spiffe_id") if not isinstance(raw.get(k), str)]
    errs += [f"config.tls.{k}: required (a string)" for k in missing]
    if missing:
        return None
    chain = raw.get("chain_file")
    return TlsFiles(base / raw["cert_file"], base / raw["key_file"], base / raw["roots_file"], raw["spiffe_id"],
                    base / chain if isinstance(chain, str) else None)


def _mesh(raw: Any, errs: list[str]) -> tuple[MeshService, ...]:
    if not isinstance(raw, list):
        errs.append("config.mesh: expected a list of services")
        return ()
    out = []
    for i, m in enumerate(raw):
        where = f"config.mesh[{i}]"
        if not isinstance(m, dict):
            errs.append(f"{where}: expected an object")
            continue
        _unknown(m, _MESH, where, errs)
        instances = []
        for j, inst in enumerate(m.get("instances", [])):
            hp = _hostport(inst, f"{where}.instances[{j}]", errs)
            if hp:
                instances.append(Instance(hp[0], hp[1]))
        svc = MeshService(str(m.get("name", "")), str(m.get("spiffe_id", "")), tuple(instances), m.get("virtual_ip"))
        errs += [f"{where}: {p}" for p in svc.problems()]
        out.append(svc)
    return tuple(out)


def parse_egress_config(raw: Any, base: Path = Path(".")) -> EgressConfig:
    errs: list[str] = []
    if not isinstance(raw, dict):
        raise InvalidInput("config: expected a JSON object at the top level")
    _unknown(raw, _TOP, "config", errs)
    service = raw.get("service")
    if not isinstance(service, str) or not service:
        errs.append("config.service: required, the name of our service (the source of egress decisions)")
    tls = _tls(raw.get("tls"), base, errs)
    outbound = _hostport(raw["outbound"], "config.outbound", errs) if raw.get("outbound") else None
    gateway = _hostport(raw["gateway"], "config.gateway", errs) if raw.get("gateway") else None
    if not outbound and not gateway and not any(e.startswith(("config.outbound", "config.gateway")) for e in errs):
        errs.append("config: nothing to serve; give \"outbound\" (sidecar) and/or \"gateway\"")
    egress = raw.get("egress_file")
    if egress is not None and not isinstance(egress, str):
        errs.append(f"config.egress_file: expected a path, got {egress!r}")
    log = raw.get("access_log") or {}
    if not isinstance(log, dict):
        errs.append("config.access_log: expected an object with path and format")
        log = {}
    _unknown(log, {"path", "format"}, "config.access_log", errs)
    if log.get("format", "json") not in ("json", "text"):
        errs.append(f"config.access_log.format: {log.get('format')!r}, use \"json\" or \"text\"")
    log_path = log.get("path", "-" if log else None)
    if log_path not in (None, "-"):
        log_path = str(base / log_path)
    admin = _hostport(raw["admin"], "config.admin", errs) if raw.get("admin") else None
    if raw.get("loop", "uvloop") not in LOOPS:
        errs.append(f"config.loop: {raw.get('loop')!r}, use one of {', '.join(LOOPS)}")
    pending = raw.get("max_pending_handshakes", DEFAULT_MAX_PENDING_HANDSHAKES)
    if isinstance(pending, bool) or not isinstance(pending, int) or pending < 1:
        errs.append(f"config.max_pending_handshakes: {pending!r} must be a whole number, at least 1")
        pending = DEFAULT_MAX_PENDING_HANDSHAKES
    cfg = EgressConfig(
        service or "", tls, base / egress if isinstance(egress, str) else None, outbound, gateway,
        _mesh(raw.get("mesh", []), errs), log_path, log.get("format", "json"), admin,
        _seconds(raw, "connect_timeout_ms", 5.0, errs), _seconds(raw, "handshake_timeout_ms", 10.0, errs),
        _seconds(raw, "peek_timeout_ms", 1.0, errs), raw.get("loop", "uvloop"), pending)
    if errs:
        raise InvalidInput(f"config: {len(errs)} problem(s): " + "; ".join(errs))
    return cfg


def load_egress_config(path: str | Path) -> EgressConfig:
    """Read and validate a config file and its egress file (every problem at once)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except OSError as e:
        raise InvalidInput(f"config {p}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"config {p}: not JSON: {e}") from None
    cfg = parse_egress_config(raw, p.parent)
    try:
        cfg.load_registry()
    except TetherError as e:
        raise InvalidInput(f"config {p}: {e}") from None
    return cfg
