"""Static JSON config of the standalone proxy process (tests, benchmarks, hand-run sidecars).

    {
      "tls": {"cert_file": "web.crt", "key_file": "web.key", "roots_file": "ca.pem",
              "chain_file": null, "spiffe_id": "spiffe://example.mesh/ns/default/dc/dc1/svc/web"},
      "inbound": {"service": "web", "bind": "0.0.0.0:21000", "local_app": "127.0.0.1:8080",
                  "connect_timeout_ms": 5000, "max_pending_handshakes": 1024},
      "upstreams": [{"name": "db", "bind": "127.0.0.1:9191",
                     "spiffe_id": "spiffe://example.mesh/ns/default/dc/dc1/svc/db",
                     "instances": ["10.0.0.7:21000", {"address": "10.0.0.8:21000"}],
                     "policy": "round_robin", "connect_timeout_ms": 5000, "max_attempts": 3}],
      "allow": ["spiffe://example.mesh/ns/default/dc/dc1/svc/api"],
      "access_log": {"path": "-", "format": "json"},
      "admin": "127.0.0.1:19000",
      "handshake_timeout_ms": 10000, "idle_timeout_ms": null, "drain_timeout_ms": 15000,
      "loop": "uvloop"
    }

Relative file paths are resolved against the config file's directory. Unknown keys are
errors (a misspelt key must not be silently ignored), and every problem is reported at once.
Plain frozen dataclasses, not pydantic: the proxy process must stay small (see docs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.admission import DEFAULT_MAX_PENDING_HANDSHAKES
from tether.core.errors import InvalidInput
from tether.proxy.inbound import InboundSpec
from tether.proxy.pool import POLICIES, Instance
from tether.proxy.tls import TlsMaterial
from tether.proxy.upstream import UpstreamSpec

LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    roots_file: Path
    spiffe_id: str
    chain_file: Path | None = None

    def load(self) -> TlsMaterial:
        """Read the files into TlsMaterial (OSError if one cannot be read)."""
        roots = tuple(_split_pem(self.roots_file.read_text()))
        chain = tuple(_split_pem(self.chain_file.read_text())) if self.chain_file else ()
        certs = _split_pem(self.cert_file.read_text())
        return TlsMaterial(certs[0] if certs else "", self.key_file.read_text(), roots, self.spiffe_id,
                           tuple(certs[1:]) + chain)


@dataclass(frozen=True, slots=True)
class StandaloneConfig:
    tls: TlsFiles
    inbound: InboundSpec | None = None
    upstreams: tuple[tuple[UpstreamSpec, tuple[Instance, ...]], ...] = ()
    allow: frozenset[str] = field(default_factory=frozenset)
    access_log_path: str | None = None
    access_log_format: str = "json"
    admin: tuple[str, int] | None = None
    handshake_timeout: float = 10.0
    idle_timeout: float | None = None
    drain_timeout: float = 15.0
    loop: str = "uvloop"


def _split_pem(text: str) -> list[str]:
    end = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + end + "\n" for part in text.split(end) if "BEGIN CERTIFICATE" in part]


class _Errors(list):
    def need(self, obj: dict, key: str, kinds, where: str) -> Any:
        if key not in obj:
            self.append(f"{where}.{key}: required")
            return None
        return self.typed(obj[key], kinds, f"{where}.{key}")

    def typed(self, value: Any, kinds, where: str) -> Any:
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            self.append(f"{where}: expected {_kind_name(kinds)}, got a boolean")
            return None
        if not isinstance(value, kinds):
            self.append(f"{where}: expected {_kind_name(kinds)}, got {type(value).__name__}")
            return None
        return value

    def unknown(self, obj: dict, allowed: set[str], where: str) -> None:
        for key in sorted(set(obj) - allowed):
            self.append(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def hostport(self, value: Any, where: str) -> tuple[str, int] | None:
        if not isinstance(value, str) or ":" not in value:
            self.append(f"{where}: expected \"host:port\", got {value!r}")
            return None
        host, _, port = value.rpartition(":")
        host = host.strip("[]")
        if not port.isdigit() or not 0 <= int(port) < 65536 or not host:
            self.append(f"{where}: {value!r} is not host:port with a port 0-65535")
            return None
        return host, int(port)

    def ms(self, obj: dict, key: str, default: float | None, where: str) -> float | None:
        value = obj.get(key, None if default is None else default * 1000)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.append(f"{where}.{key}: expected milliseconds > 0, got {value!r}")
            return default
        return value / 1000


def _kind_name(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join({str: "string", int: "integer", float: "number", list: "list", dict: "object",
                        bool: "boolean"}.get(k, k.__name__) for k in kinds)


def load_config(path: str | os.PathLike) -> StandaloneConfig:
    """Read and validate a standalone config file; InvalidInput lists every problem."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except OSError as e:
        raise InvalidInput(f"config {p}: cannot read: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise InvalidInput(f"config {p}: not JSON: {e}") from e
    return parse_config(raw, base=p.parent)


def parse_config(raw: Any, base: Path = Path(".")) -> StandaloneConfig:
    errs = _Errors()
    if not isinstance(raw, dict):
        raise InvalidInput("config: expected a JSON object at the top level")
    errs.unknown(raw, {"tls", "inbound", "upstreams", "allow", "access_log", "admin", "handshake_timeout_ms",
                       "idle_timeout_ms", "drain_timeout_ms", "loop"}, "config")
    tls = _parse_tls(raw.get("tls"), base, errs)
    inbound = _parse_inbound(raw["inbound"], errs) if raw.get("inbound") is not None else None
    raw_ups = errs.typed(raw.get("upstreams", []), list, "config.upstreams") or []
    ups = [_parse_upstream(u, i, errs) for i, u in enumerate(raw_ups)]
    allow = errs.typed(raw.get("allow", []), list, "config.allow") or []
    for i, a in enumerate(allow):
        if not isinstance(a, str) or not (a == "*" or a.startswith("spiffe://")):
            errs.append(f"config.allow[{i}]: expected a spiffe:// URI or \"*\", got {a!r}")
    log_path, log_format = None, "json"
    if raw.get("access_log") is not None:
        al = errs.typed(raw["access_log"], dict, "config.access_log") or {}
        errs.unknown(al, {"path", "format"}, "config.access_log")
        log_path = errs.typed(al.get("path", "-"), str, "config.access_log.path")
        if log_path not in (None, "-"):
            log_path = str(base / log_path)
        log_format = al.get("format", "json")
        if log_format not in ("json", "text"):
            errs.append(f"config.access_log.format: {log_format!r}, use \"json\" or \"text\"")
    admin = errs.hostport(raw["admin"], "config.admin") if raw.get("admin") is not None else None
    loop = raw.get("loop", "uvloop")
    if loop not in LOOPS:
        errs.append(f"config.loop: {loop!r}, use one of {', '.join(LOOPS)}")
    if not inbound and not ups:
        errs.append("config: nothing to do; give \"inbound\" and/or \"upstreams\"")
    names = [u.get("name") for u in raw_ups if isinstance(u, dict)]
    for dup in sorted({n for n in names if names.count(n) > 1}, key=str):
        errs.append(f"config.upstreams: {dup!r} appears more than once")
    hs = errs.ms(raw, "handshake_timeout_ms", 10.0, "config")
    idle = errs.ms(raw, "idle_timeout_ms", None, "config")
    drain = errs.ms(raw, "drain_timeout_ms", 15.0, "config")
    if errs:
        raise InvalidInput(f"config: {len(errs)} problem(s): " + "; ".join(errs))
    return StandaloneConfig(tls, inbound, tuple(u for u in ups if u), frozenset(allow), log_path, log_format,
                            admin, hs, idle, drain, loop)


def _parse_tls(tls: Any, base: Path, errs: _Errors) -> TlsFiles | None:
    if errs.typed(tls, dict, "config.tls") is None:
        return None
    errs.unknown(tls, {"cert_file", "key_file", "roots_file", "chain_file", "spiffe_id"}, "config.tls")
    files = {k: errs.need(tls, k, str, "config.tls") for k in ("cert_file", "key_file", "roots_file", "spiffe_id")}
    chain = errs.typed(tls.get("chain_file", ""), (str, type(None)), "config.tls.chain_file")
    if files["spiffe_id"] and not files["spiffe_id"].startswith("spiffe://"):
        errs.append(f"config.tls.spiffe_id: {files['spiffe_id']!r} is not a spiffe:// URI")
    if None in files.values():
        return None
    return TlsFiles(base / files["cert_file"], base / files["key_file"], base / files["roots_file"],
                    files["spiffe_id"], base / chain if chain else None)


def _parse_inbound(obj: Any, errs: _Errors) -> InboundSpec | None:
    if errs.typed(obj, dict, "config.inbound") is None:
        return None
    errs.unknown(obj, {"service", "bind", "local_app", "connect_timeout_ms", "max_pending_handshakes"}, "config.inbound")
    service = errs.need(obj, "service", str, "config.inbound")
    bind = errs.hostport(obj.get("bind", "0.0.0.0:0"), "config.inbound.bind")
    app = errs.hostport(obj.get("local_app"), "config.inbound.local_app")
    timeout = errs.ms(obj, "connect_timeout_ms", 5.0, "config.inbound")
    pending = errs.typed(obj.get("max_pending_handshakes", DEFAULT_MAX_PENDING_HANDSHAKES), int,
                         "config.inbound.max_pending_handshakes")
    if pending is not None and pending < 1:
        errs.append(f"config.inbound.max_pending_handshakes: {pending} must be at least 1")
    if not (service and bind and app and pending and pending >= 1):
        return None
    return InboundSpec(service, app[1], app[0], bind[0], bind[1], timeout, pending)


def _parse_upstream(obj: Any, i: int, errs: _Errors):
    where = f"config.upstreams[{i}]"
    if errs.typed(obj, dict, where) is None:
        return None
    errs.unknown(obj, {"name", "bind", "spiffe_id", "instances", "policy", "connect_timeout_ms", "max_attempts",
                       "sni"}, where)
    name = errs.need(obj, "name", str, where)
    spiffe = errs.need(obj, "spiffe_id", str, where)
    bind = errs.hostport(obj.get("bind"), f"{where}.bind")
    policy = obj.get("policy", "round_robin")
    if policy not in POLICIES:
        errs.append(f"{where}.policy: {policy!r}, use one of {', '.join(POLICIES)}")
    attempts = errs.typed(obj.get("max_attempts", 3), int, f"{where}.max_attempts") or 3
    sni = errs.typed(obj.get("sni"), (str, type(None)), f"{where}.sni")
    timeout = errs.ms(obj, "connect_timeout_ms", 5.0, where)
    instances = []
    for j, inst in enumerate(errs.typed(obj.get("instances", []), list, f"{where}.instances") or []):
        spiffe_override = None
        if isinstance(inst, dict):
            errs.unknown(inst, {"address", "spiffe_id"}, f"{where}.instances[{j}]")
            spiffe_override = inst.get("spiffe_id")
            inst = inst.get("address")
        hp = errs.hostport(inst, f"{where}.instances[{j}]")
        if hp:
            instances.append(Instance(hp[0], hp[1], spiffe_override))
    if not (name and spiffe and bind):
        return None
    return UpstreamSpec(name, bind[1], spiffe, bind[0], policy, timeout, attempts, sni), tuple(instances)
