"""Agent and server configuration files, Consul's keys: parse, merge, validate. Pure.

    config, warnings = load_config_documents([("a.hcl", {...}), ("b.json", {...})])

Files are merged in the order given (`-config-file` in order, then each `-config-dir`'s
`*.json` / `*.hcl` in lexical order, as Consul does): a later scalar replaces an earlier
one, blocks merge key by key, and `service`/`services`/`check`/`checks` and
`retry_join` accumulate. Flags override files (the CLI applies them afterwards).

Every key is one of:

  - **Tether's**: honoured (the schema below; Consul's names wherever Consul has one);
  - **Consul's, not implemented**: named in one warning line at start, and ignored; or,
    where ignoring it would leave the user less safe than they think (TLS on the API,
    Consul's pre-1.4 ACL keys), refused with what to do instead;
  - **neither**: refused, naming the key and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tether.core.browserguard import host_name_problem, origin_problem
from tether.core.duration import parse_duration
from tether.core.errors import InvalidInput

ALLOW, DENY = "allow", "deny"
DOWN_POLICIES = ("extend-cache", "async-cache", "deny", "allow")


@dataclass
class AclConfig:
    """The `acl` block (Consul's keys and defaults)."""

    enabled: bool = False
    default_policy: str = ALLOW
    down_policy: str = "extend-cache"
    token_ttl: float = 30.0
    enable_token_persistence: bool = False
    enable_key_list_policy: bool = False
    initial_management: str = ""
    agent: str = ""
    default: str = ""
    agent_recovery: str = ""
    dns: str = ""
    config_file_service_registration: str = ""
    replication: str = ""


@dataclass
class FileConfig:
    """What the configuration files say; None: not set (the flag or the built-in default wins)."""

    datacenter: str | None = None
    data_dir: str | None = None
    node_name: str | None = None
    client_addr: str | None = None
    advertise_addr: str | None = None
    http_port: int | None = None
    dns_port: int | None = None
    http_addr: str | None = None  # addresses.http: the API's bind address, over client_addr
    dns_addr: str | None = None
    sidecar_port_range: tuple[int, int] | None = None
    retry_join: list[str] = field(default_factory=list)
    server: bool | None = None
    log_level: str | None = None
    node_meta: dict[str, str] = field(default_factory=dict)
    managed_proxies: bool | None = None
    default_intention: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    acl: AclConfig = field(default_factory=AclConfig)
    acl_keys: set[str] = field(default_factory=set)  # which acl.* keys a file set
    services: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)


# -- the schema ------------------------------------------------------------------------------

STR, INT, BOOL, STRS, MAP, DURATION, DEFINITION = "string", "integer", "boolean", "list of strings", \
    "object", "duration", "definition"


class Consul:
    """A Consul key Tether does not implement: warned about (or refused with `refuse`)."""

    def __init__(self, why: str = "", *, refuse: str = "") -> None:
        self.why, self.refuse = why, refuse


_NO_TLS = Consul(refuse="Tether's HTTP API has no TLS of its own yet: remove the key and put a TLS-terminating "
                        "proxy in front of the API, or keep the API on loopback")
_LEGACY_ACL = Consul(refuse="this is Consul's pre-1.4 ACL key: write it in the acl { ... } block (see docs/acl.md)")
_GOSSIP = Consul("Tether has no gossip layer (agents heartbeat to the servers)")

ACL_TOKENS = {"initial_management": STR, "master": STR, "agent": STR, "default": STR, "agent_recovery": STR,
              "agent_master": STR, "dns": STR, "config_file_service_registration": STR,
              "replication": Consul("Tether has one datacenter per cluster: there is nothing to replicate"),
              "managed_service_provider": Consul("Consul Enterprise only")}
SCHEMA: dict[str, Any] = {
    "datacenter": STR, "data_dir": STR, "node_name": STR, "client_addr": STR, "advertise_addr": STR,
    "retry_join": STRS, "server": BOOL, "log_level": STR, "node_meta": MAP,
    "service": DEFINITION, "services": DEFINITION, "check": DEFINITION, "checks": DEFINITION,
    "ports": {"http": INT, "dns": INT, "sidecar_min_port": INT, "sidecar_max_port": INT,
              "https": _NO_TLS, "grpc": Consul("no gRPC/xDS interface yet"), "grpc_tls": _NO_TLS,
              "serf_lan": _GOSSIP, "serf_wan": _GOSSIP, "server": Consul("servers are reached over HTTP"),
              "proxy_min_port": Consul("managed proxies take their ports from sidecar_min_port..sidecar_max_port"),
              "proxy_max_port": Consul("managed proxies take their ports from sidecar_min_port..sidecar_max_port"),
              "expose_min_port": Consul(), "expose_max_port": Consul()},
    "addresses": {"http": STR, "dns": STR, "https": _NO_TLS, "grpc": Consul("no gRPC/xDS interface yet"),
                  "grpc_tls": _NO_TLS},
    "acl": {"enabled": BOOL, "default_policy": (ALLOW, DENY), "down_policy": DOWN_POLICIES, "token_ttl": DURATION,
            "enable_token_persistence": BOOL, "enable_key_list_policy": BOOL, "tokens": ACL_TOKENS,
            "policy_ttl": Consul("policies are resolved with the token (token_ttl)"),
            "role_ttl": Consul("roles are resolved with the token (token_ttl)"),
            "enable_token_replication": Consul("nothing to replicate"),
            "disabled_ttl": Consul(), "msp_disable_bootstrap": Consul("Consul Enterprise only")},
    "http_config": {"allowed_origins": STRS, "allowed_hosts": STRS,
                    "block_endpoints": Consul(refuse="not implemented: endpoints cannot be blocked; use ACLs"),
                    "allow_write_http_from": Consul(refuse="not implemented: writes cannot be limited by "
                                                           "address; use ACLs"),
                    "response_headers": Consul(), "use_cache": Consul(), "max_header_bytes": Consul()},
    # Tether's own keys (Consul has no equivalent)
    "managed_proxies": BOOL, "default_intention": (ALLOW, DENY),
}
#: Consul keys (top level) Tether does not implement, and why; anything else unknown is refused.
CONSUL_ONLY: dict[str, Consul] = {
    **{k: _LEGACY_ACL for k in ("acl_agent_master_token", "acl_agent_token", "acl_datacenter",
                                "acl_default_policy", "acl_down_policy", "acl_enable_key_list_policy",
                                "acl_master_token", "acl_replication_token", "acl_ttl", "acl_token",
                                "acl_disabled_ttl")},
    **{k: _NO_TLS for k in ("ca_file", "ca_path", "cert_file", "key_file", "verify_incoming",
                            "verify_incoming_https", "verify_incoming_rpc", "verify_outgoing",
                            "verify_server_hostname", "tls", "auto_encrypt", "tls_cipher_suites",
                            "tls_min_version", "tls_prefer_server_cipher_suites")},
    **{k: _GOSSIP for k in ("encrypt", "encrypt_verify_incoming", "encrypt_verify_outgoing", "gossip_lan",
                            "gossip_wan", "serf_lan", "serf_wan", "serf_lan_allowed_cidrs",
                            "serf_wan_allowed_cidrs", "bind_addr", "advertise_addr_wan", "advertise_addr_ipv4",
                            "advertise_addr_ipv6", "advertise_addr_wan_ipv4", "advertise_addr_wan_ipv6",
                            "start_join", "start_join_wan", "retry_join_wan", "retry_interval",
                            "retry_interval_wan", "retry_max", "retry_max_wan", "rejoin_after_leave",
                            "reconnect_timeout", "reconnect_timeout_wan", "translate_wan_addrs",
                            "disable_keyring_file", "segment", "segments")},
    **{k: Consul("Tether's servers keep their state in one store (SQLite now, etcd later), not Raft")
       for k in ("bootstrap", "bootstrap_expect", "raft_protocol", "raft_snapshot_threshold",
                 "raft_snapshot_interval", "raft_trailing_logs", "autopilot", "non_voting_server", "performance",
                 "protocol", "server_name", "primary_datacenter", "primary_gateways", "primary_gateways_interval",
                 "enable_acl_replication")},
    **{k: Consul() for k in ("auto_config", "cache", "check_output_max_size", "check_update_interval",
                             "config_entries", "connect", "dns_config", "domain", "alt_domain", "recursors",
                             "default_query_time", "max_query_time", "disable_anonymous_signature",
                             "disable_coordinates", "disable_host_node_id", "disable_http_unprintable_char_filter",
                             "disable_remote_exec", "disable_update_check", "discard_check_output",
                             "discovery_max_stale", "enable_agent_tls_for_checks", "enable_central_service_config",
                             "enable_debug", "enable_script_checks", "enable_local_script_checks", "enable_syslog",
                             "leave_on_terminate", "limits", "log_json", "log_file", "log_rotate_duration",
                             "log_rotate_bytes", "log_rotate_max_files", "node_id", "pid_file", "session_ttl_min",
                             "skip_leave_on_interrupt", "syslog_facility", "tagged_addresses", "telemetry", "ui",
                             "ui_config", "ui_content_path", "ui_dir", "unix_sockets", "watches", "snapshot_agent",
                             "ae_interval", "check_deregister_interval_min", "check_reap_interval", "consul",
                             "revision", "segment_limit", "segment_name_limit", "sync_coordinate_interval_min",
                             "sync_coordinate_rate_target", "version", "version_prerelease", "audit",
                             "reporting", "license_path", "experiments", "peering", "locality", "cloud",
                             "advertise_reconnect_timeout", "serf_advertise_addr", "http_max_conns_per_client",
                             "rpc", "xds")},
}


# -- merging and validation ----------------------------------------------------------------

def load_config_documents(documents: Iterable[tuple[str, dict[str, Any]]]) -> tuple[FileConfig, list[str]]:
    """Merge `(source, document)` pairs (JSON shape; HCL already normalised) into a FileConfig.

    Returns (config, warnings); raises InvalidInput listing every refused key with its file."""
    errors: list[str] = []
    warnings: dict[str, str] = {}
    merged: dict[str, Any] = {}
    for source, doc in documents:
        if not isinstance(doc, dict):
            errors.append(f"{source}: the configuration must be an object of keys")
            continue
        _merge(merged, _check(doc, SCHEMA, source, "", errors, warnings), source)
    if errors:
        raise InvalidInput("; ".join(errors[:8]) + (f" (and {len(errors) - 8} more)" if len(errors) > 8 else ""))
    config = _to_config(merged)
    lines = [f"{key} ({why})" if why else key for key, why in sorted(warnings.items())]
    return config, ([f"these Consul keys are not implemented by Tether and are ignored: {', '.join(lines)}"]
                    if lines else [])


def _check(doc: dict[str, Any], schema: dict[str, Any], source: str, path: str, errors: list[str],
           warnings: dict[str, str]) -> dict[str, Any]:
    """The keys of `doc` that Tether honours, validated; warnings and errors for the rest."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"{path}{key}"
        spec = schema.get(key)
        if spec is None and not path:
            spec = CONSUL_ONLY.get(key)
        if spec is None:
            errors.append(f"{source}: unknown configuration key {where!r} (neither Tether's nor Consul's)")
        elif isinstance(spec, Consul):
            if spec.refuse:
                errors.append(f"{source}: {where}: {spec.refuse}")
            else:
                warnings.setdefault(where, spec.why)
        elif isinstance(spec, dict):
            block = _single_block(value, source, where, errors)
            if block is not None:
                out[key] = _check(block, spec, source, where + ".", errors, warnings)
        else:
            checked = _typed(value, spec, source, where, errors)
            if checked is not None:
                out[key] = checked
    return out


def _single_block(value: Any, source: str, where: str, errors: list[str]) -> dict[str, Any] | None:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]  # HCL's `acl { ... }` block
    if not isinstance(value, dict):
        errors.append(f"{source}: {where}: expected a block of keys")
        return None
    return value


def _typed(value: Any, spec: str | tuple[str, ...], source: str, where: str, errors: list[str]) -> Any:
    if isinstance(spec, tuple):  # one of a few words
        if value not in spec:
            errors.append(f"{source}: {where}: {value!r}: use {' or '.join(spec)}")
            return None
        return value
    if spec == MAP and isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]  # HCL's `node_meta { ... }` block
    ok = {STR: isinstance(value, str), INT: isinstance(value, int) and not isinstance(value, bool),
          BOOL: isinstance(value, bool), MAP: isinstance(value, dict),
          STRS: isinstance(value, list) and all(isinstance(v, str) for v in value),
          DURATION: isinstance(value, str), DEFINITION: isinstance(value, (dict, list))}[spec]
    if not ok:
        errors.append(f"{source}: {where}: expected a {spec}, got {value!r}")
        return None
    if spec == DURATION:
        try:
            return parse_duration(value, field=where)
        except InvalidInput as exc:
            errors.append(f"{source}: {exc.message}")
            return None
    if spec == DEFINITION:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, dict) for v in items):
            errors.append(f"{source}: {where}: expected definitions (objects)")
            return None
        return [(source, item) for item in items]
    return value


_ACCUMULATE = ("service", "services", "check", "checks", "retry_join")


def _merge(into: dict[str, Any], doc: dict[str, Any], source: str) -> None:
    for key, value in doc.items():
        if key in _ACCUMULATE:
            into.setdefault(key, []).extend(value)
        elif isinstance(value, dict) and isinstance(into.get(key), dict) and key != "node_meta":
            _merge(into[key], value, source)
        else:
            into[key] = value


def _to_config(merged: dict[str, Any]) -> FileConfig:
    errors: list[str] = []
    ports, addresses = merged.get("ports", {}), merged.get("addresses", {})
    http_cfg = merged.get("http_config", {})
    cfg = FileConfig(
        datacenter=merged.get("datacenter"), data_dir=merged.get("data_dir"), node_name=merged.get("node_name"),
        client_addr=merged.get("client_addr"), advertise_addr=merged.get("advertise_addr"),
        http_port=ports.get("http"), dns_port=ports.get("dns"), http_addr=addresses.get("http"),
        dns_addr=addresses.get("dns"), retry_join=list(merged.get("retry_join", [])), server=merged.get("server"),
        log_level=merged.get("log_level"), node_meta=dict(merged.get("node_meta", {})),
        managed_proxies=merged.get("managed_proxies"), default_intention=merged.get("default_intention"),
        allowed_origins=list(http_cfg.get("allowed_origins", [])), allowed_hosts=list(http_cfg.get("allowed_hosts", [])),
        services=[*merged.get("service", []), *merged.get("services", [])],
        checks=[*merged.get("check", []), *merged.get("checks", [])],
    )
    if "sidecar_min_port" in ports or "sidecar_max_port" in ports:
        low, high = ports.get("sidecar_min_port", 21000), ports.get("sidecar_max_port", 21255)
        if not 1 <= low <= high <= 65535:
            errors.append(f"ports.sidecar_min_port..sidecar_max_port: {low}..{high} is not a port range")
        cfg.sidecar_port_range = (low, high)
    for name, port in (("ports.http", cfg.http_port), ("ports.dns", cfg.dns_port)):
        if port is not None and not -1 <= port <= 65535:
            errors.append(f"{name}: {port} is not a port (0 picks a free one, -1 turns it off)")
    errors += [f"http_config.allowed_origins: {p}" for p in map(origin_problem, cfg.allowed_origins) if p]
    errors += [f"http_config.allowed_hosts: {p}" for p in map(host_name_problem, cfg.allowed_hosts) if p]
    if cfg.node_meta and not all(isinstance(v, str) for v in cfg.node_meta.values()):
        errors.append("node_meta: values must be strings")
    _acl(merged.get("acl", {}), cfg, errors)
    if errors:
        raise InvalidInput("; ".join(errors))
    return cfg


def _acl(block: dict[str, Any], cfg: FileConfig, errors: list[str]) -> None:
    acl = cfg.acl
    tokens = block.get("tokens", {})
    for key in ("enabled", "default_policy", "down_policy", "token_ttl", "enable_token_persistence",
                "enable_key_list_policy"):
        if key in block:
            setattr(acl, key, block[key])
            cfg.acl_keys.add(key)
    aliases = {"master": "initial_management", "agent_master": "agent_recovery"}
    for key, value in tokens.items():
        target = aliases.get(key, key)
        if key in aliases and target in tokens and tokens[target] != value:
            errors.append(f"acl.tokens.{key} and acl.tokens.{target} are the same token with two values")
        setattr(acl, target, value)
    if acl.token_ttl <= 0:
        errors.append("acl.token_ttl: must be positive")
