"""The CA configuration document: Tether's stored form, Consul's JSON, and parsing a change.

`PUT /v1/connect/ca/configuration` bodies are parsed here into a `ConfigChange`: the new
public settings plus, when the change needs a new root, what to build it from. Parsing
reads nothing but the body (and, for the `*File` keys, files on the server's disk
through the `read_file` callable it is given); it builds no keys and writes nothing, so a
refused change cannot touch the active CA. Every problem in a body is reported at once.

Which changes rotate the root (documented in docs/identity.md):
  built-in ("consul")  `RotateNow: true`, a new `PrivateKey` (+ optional `RootCert`), a
                       different `PrivateKeyType`/`PrivateKeyBits`, or switching from external;
  external             a `RootCert`/`IntermediateCert`/`IntermediateKey` that differs from
                       the current one (or switching from built-in).
Keys left out of `Config` keep their current value, so GET -> edit -> PUT works, and so
does a body that names only what changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from tether.ca import x509 as tx
from tether.core.certwindow import (
    DEFAULT_LEAF_TTL_SECONDS, MIN_LEAF_TTL_SECONDS, ROOT_TTL_SECONDS, validate_leaf_ttl,
)
from tether.core.duration import format_duration, parse_duration
from tether.core.errors import InvalidInput, TetherError

#: Consul's default signing rate limit; 0 turns the limit off (as in Consul).
DEFAULT_CSR_MAX_PER_SECOND = 50.0
#: Shown by GET for Consul compatibility; the built-in CA has no intermediate to age.
INTERMEDIATE_CERT_TTL_SECONDS = 8760 * 3600.0

BUILTIN_NAMES = ("consul", "builtin")  # "consul" is what Consul clients send for the built-in CA
EXTERNAL = "external"
_COMMON_KEYS = {"LeafCertTTL", "CSRMaxPerSecond", "CSRMaxConcurrent", "IntermediateCertTTL", "RootCertTTL",
                "RotationPeriod"}
_BUILTIN_KEYS = _COMMON_KEYS | {"PrivateKey", "PrivateKeyFile", "RootCert", "RootCertFile", "PrivateKeyType",
                                "PrivateKeyBits", "RotateNow"}
_EXTERNAL_KEYS = _COMMON_KEYS | {"RootCert", "RootCertFile", "IntermediateCert", "IntermediateCertFile",
                                 "IntermediateKey", "IntermediateKeyFile"}
# GET returns these beside Provider/Config; a PUT of a GET's output must still work.
_TOP_KEYS = {"Provider", "Config", "ForceWithoutCrossSigning", "State", "CreateIndex", "ModifyIndex", "ClusterID"}


@dataclass(frozen=True, slots=True)
class CAConfig:
    """The public CA settings (no key material): stored under `ca/config`."""

    provider: str = "consul"  # "consul" (built-in) or "external"
    leaf_cert_ttl: float = DEFAULT_LEAF_TTL_SECONDS
    csr_max_per_second: float = DEFAULT_CSR_MAX_PER_SECOND
    private_key_type: str = tx.DEFAULT_KEY_TYPE
    private_key_bits: int = tx.DEFAULT_KEY_BITS

    def to_doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CAConfig:
        return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})

    def to_consul_json(self, provider_state: dict[str, Any]) -> dict[str, Any]:
        """Consul's `Config` object; for the external CA the certificates, never the key."""
        config: dict[str, Any] = {
            "LeafCertTTL": format_duration(self.leaf_cert_ttl),
            "IntermediateCertTTL": format_duration(INTERMEDIATE_CERT_TTL_SECONDS),
            "RootCertTTL": format_duration(ROOT_TTL_SECONDS),
            "CSRMaxPerSecond": self.csr_max_per_second,
            "CSRMaxConcurrent": 0,
        }
        if self.provider == EXTERNAL:
            config["RootCert"] = provider_state.get("root_cert_pem", "")
            config["IntermediateCert"] = provider_state.get("intermediate_cert_pem", "")
        else:
            config["PrivateKeyType"] = self.private_key_type
            config["PrivateKeyBits"] = self.private_key_bits
        return config


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A parsed PUT: the new settings, and the new root's material when it rotates."""

    config: CAConfig
    rotate: bool = False
    private_key_pem: str | None = None  # built-in: operator key (None: generate one)
    root_cert_pem: str | None = None  # built-in: operator root; external: the organisation's root
    intermediate_cert_pem: str | None = None
    intermediate_key_pem: str | None = None
    force_without_cross_signing: bool = False


def parse_config_change(
    body: Any,
    current: CAConfig,
    current_state: dict[str, Any],
    *,
    min_leaf_ttl: float = MIN_LEAF_TTL_SECONDS,
    read_file: Callable[[str], str] | None = None,
) -> ConfigChange:
    """Parse a PUT body against the current CA; InvalidInput lists every problem."""
    problems: list[str] = []
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object like {"Provider": "consul", "Config": {"LeafCertTTL": "72h"}}')
    problems += [f"unknown field {k!r}" for k in sorted(set(body) - _TOP_KEYS)]
    provider = _provider(body.get("Provider", current.provider), problems)
    raw = body.get("Config") or {}
    force = body.get("ForceWithoutCrossSigning", False)
    if not isinstance(force, bool):
        problems.append(f"ForceWithoutCrossSigning must be true or false, got {force!r}")
    if not isinstance(raw, dict):
        raise InvalidInput(f"Config must be a JSON object, got {type(raw).__name__}; " + "; ".join(problems))
    allowed = _EXTERNAL_KEYS if provider == EXTERNAL else _BUILTIN_KEYS
    problems += [f"Config.{k}: not a setting of the {provider!r} provider" for k in sorted(set(raw) - allowed)]
    config = _common_settings(raw, current, provider, min_leaf_ttl, problems)
    text = _pem_fields(raw, problems, read_file)
    if provider == EXTERNAL:
        change = _external_change(config, text, current, current_state, problems)
    else:
        config = _key_settings(raw, config, problems)
        change = _builtin_change(config, raw, text, current, current_state, problems)
    if problems:
        raise InvalidInput("CA configuration refused: " + "; ".join(dict.fromkeys(problems)))
    return dataclasses.replace(change, force_without_cross_signing=force is True)


def _provider(value: Any, problems: list[str]) -> str:
    if value in BUILTIN_NAMES:
        return "consul"
    if value == EXTERNAL:
        return EXTERNAL
    problems.append(f"Provider {value!r} is not supported; use \"consul\" (the built-in CA) or \"external\"")
    return "consul"


def _common_settings(raw: dict[str, Any], current: CAConfig, provider: str, min_ttl: float,
                     problems: list[str]) -> CAConfig:
    ttl, rate = current.leaf_cert_ttl, current.csr_max_per_second
    if "LeafCertTTL" in raw:
        ttl = _attempt(problems, lambda: validate_leaf_ttl(
            _duration(raw["LeafCertTTL"], "Config.LeafCertTTL"), field="Config.LeafCertTTL", min_seconds=min_ttl),
            ttl)
    if "CSRMaxPerSecond" in raw:
        value = raw["CSRMaxPerSecond"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            problems.append(f"Config.CSRMaxPerSecond must be a number >= 0 (0 turns the limit off), got {value!r}")
        else:
            rate = float(value)
    if raw.get("CSRMaxConcurrent", 0) not in (0, None):
        problems.append("Config.CSRMaxConcurrent is not supported by Tether; use CSRMaxPerSecond")
    for key, fixed in (("RootCertTTL", ROOT_TTL_SECONDS), ("IntermediateCertTTL", INTERMEDIATE_CERT_TTL_SECONDS)):
        if key in raw:
            seconds = _attempt(problems, lambda k=key: _duration(raw[k], f"Config.{k}"), fixed)
            if seconds != fixed:
                problems.append(f"Config.{key} is fixed at {format_duration(fixed)} in Tether; leave it out")
    if "RotationPeriod" in raw:  # Consul's legacy setting: accepted for old config files, no effect
        _attempt(problems, lambda: _duration(raw["RotationPeriod"], "Config.RotationPeriod"), 0.0)
    return dataclasses.replace(current, provider=provider, leaf_cert_ttl=ttl, csr_max_per_second=rate)


def _key_settings(raw: dict[str, Any], config: CAConfig, problems: list[str]) -> CAConfig:
    key_type = raw.get("PrivateKeyType", config.private_key_type)
    bits = raw.get("PrivateKeyBits", config.private_key_bits)
    if not isinstance(key_type, str) or not isinstance(bits, int) or (key_type, bits) not in tx.GENERATABLE:
        problems.append(f"Config.PrivateKeyType/PrivateKeyBits {key_type!r}/{bits!r} not supported; "
                        "use ec/256, rsa/2048 or rsa/4096")
        return config
    return dataclasses.replace(config, private_key_type=key_type, private_key_bits=bits)


def _builtin_change(config: CAConfig, raw: dict[str, Any], text: dict[str, str], current: CAConfig,
                    state: dict[str, Any], problems: list[str]) -> ConfigChange:
    rotate_now = raw.get("RotateNow", False)
    if not isinstance(rotate_now, bool):
        problems.append(f"Config.RotateNow must be true or false, got {rotate_now!r}")
    key_pem, root_pem = text.get("PrivateKey"), text.get("RootCert")
    if root_pem and not key_pem:
        problems.append("Config.RootCert needs the matching Config.PrivateKey")
    if key_pem and rotate_now is True:
        problems.append("give Config.PrivateKey or Config.RotateNow, not both")
    if key_pem:
        key = _attempt(problems, lambda: tx.load_private_key_pem(key_pem, field="Config.PrivateKey"), None)
        if key is not None and not root_pem and _same_builtin_key(key, state):
            key_pem = None  # the key in use already: nothing to rotate (as Consul)
    switched = current.provider != config.provider
    new_key_kind = (config.private_key_type, config.private_key_bits) != (
        current.private_key_type, current.private_key_bits)
    rotate = bool(key_pem) or rotate_now is True or switched or new_key_kind
    return ConfigChange(config, rotate=rotate, private_key_pem=key_pem, root_cert_pem=root_pem if key_pem else None)


def _external_change(config: CAConfig, text: dict[str, str], current: CAConfig, state: dict[str, Any],
                     problems: list[str]) -> ConfigChange:
    root, inter, key = text.get("RootCert"), text.get("IntermediateCert"), text.get("IntermediateKey")
    unchanged = (
        current.provider == EXTERNAL and key is None
        and _same_pem(root, state.get("root_cert_pem")) and _same_pem(inter, state.get("intermediate_cert_pem"))
    )
    if unchanged:
        return ConfigChange(config)
    missing = [name for name, value in (("RootCert", root), ("IntermediateCert", inter), ("IntermediateKey", key))
               if not value]
    if missing:
        problems.append("the external provider needs " + ", ".join(f"Config.{m} (or {m}File)" for m in missing))
    return ConfigChange(config, rotate=True, root_cert_pem=root, intermediate_cert_pem=inter,
                        intermediate_key_pem=key)


def _pem_fields(raw: dict[str, Any], problems: list[str], read_file: Callable[[str], str] | None) -> dict[str, str]:
    """PEM text per field, from the inline value or from `<Field>File` (a path on the server)."""
    out: dict[str, str] = {}
    for name in ("PrivateKey", "RootCert", "IntermediateCert", "IntermediateKey"):
        inline, path = raw.get(name), raw.get(name + "File")
        if inline not in (None, "") and path not in (None, ""):
            problems.append(f"give Config.{name} or Config.{name}File, not both")
        elif inline not in (None, ""):
            if isinstance(inline, str):
                out[name] = inline
            else:
                problems.append(f"Config.{name} must be PEM text, got {type(inline).__name__}")
        elif path not in (None, ""):
            if not isinstance(path, str) or read_file is None:
                problems.append(f"Config.{name}File must be a path on the server, got {path!r}")
            else:
                value = _attempt(problems, lambda p=path, n=name: read_file_field(read_file, p, n), None)
                if value is not None:
                    out[name] = value
    return out


def read_file_field(read_file: Callable[[str], str], path: str, name: str) -> str:
    try:
        return read_file(path)
    except OSError as exc:
        raise InvalidInput(f"Config.{name}File: cannot read {path!r} on the server: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"Config.{name}File: {path!r} is not PEM text") from None


def _same_builtin_key(key: tx.PrivateKey, state: dict[str, Any]) -> bool:
    if state.get("provider") != "builtin" or not state.get("private_key_pem"):
        return False
    current = tx.load_private_key_pem(state["private_key_pem"])
    return key.public_key() == current.public_key()


def _same_pem(given: str | None, stored: str | None) -> bool:
    """Omitted, or the same certificates (whitespace around PEM blocks does not matter)."""
    if given is None:
        return True
    return stored is not None and given.strip() == stored.strip()


def _duration(value: Any, field: str) -> float:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a duration string such as \"72h\" or \"30m\", got {value!r}")
    return parse_duration(value, field=field)


def _attempt(problems: list[str], fn: Callable[[], Any], fallback: Any) -> Any:
    try:
        return fn()
    except TetherError as exc:
        problems.append(exc.message)
        return fallback
