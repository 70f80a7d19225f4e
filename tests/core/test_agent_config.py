"""Configuration files (core/agent_config.py): Consul's keys, merging, warnings, refusals."""

from __future__ import annotations

import pytest

from tether.core.agent_config import load_config_documents
from tether.core.errors import InvalidInput
from tether.core.hcl import parse_hcl

HCL = '''
datacenter = "east"
node_name  = "n1"
ports { http = 8501  dns = -1 }
acl {
  enabled        = true
  default_policy = "deny"
  down_policy    = "async-cache"
  token_ttl      = "45s"
  tokens {
    initial_management = "11111111-2222-3333-4444-555555555555"
    agent              = "66666666-7777-8888-9999-000000000000"
  }
}
service { name = "web"  port = 8080 }
service { name = "db"   port = 5432 }
'''


def test_hcl_and_json_files_mean_the_same():
    json_doc = {"datacenter": "east", "node_name": "n1", "ports": {"http": 8501, "dns": -1},
                "acl": {"enabled": True, "default_policy": "deny", "down_policy": "async-cache", "token_ttl": "45s",
                        "tokens": {"initial_management": "11111111-2222-3333-4444-555555555555",
                                   "agent": "66666666-7777-8888-9999-000000000000"}},
                "services": [{"name": "web", "port": 8080}, {"name": "db", "port": 5432}]}
    from_hcl, _ = load_config_documents([("a.hcl", parse_hcl(HCL))])
    from_json, _ = load_config_documents([("a.json", json_doc)])
    assert from_hcl.acl == from_json.acl
    assert (from_hcl.datacenter, from_hcl.http_port, from_hcl.dns_port) == ("east", 8501, -1)
    assert from_hcl.acl.token_ttl == 45.0 and from_hcl.acl.down_policy == "async-cache"
    assert [d["name"] for _, d in from_hcl.services] == [d["name"] for _, d in from_json.services] == ["web", "db"]


def test_later_files_win_blocks_merge_and_services_accumulate():
    config, _ = load_config_documents([
        ("1.json", {"datacenter": "a", "acl": {"enabled": True, "tokens": {"agent": "x"}}, "service": {"name": "s1"}}),
        ("2.json", {"datacenter": "b", "acl": {"default_policy": "deny"}, "service": {"name": "s2"},
                    "retry_join": ["10.0.0.1:8500"]}),
    ])
    assert config.datacenter == "b"
    assert (config.acl.enabled, config.acl.default_policy, config.acl.agent) == (True, "deny", "x")
    assert [d["name"] for _, d in config.services] == ["s1", "s2"]
    assert [source for source, _ in config.services] == ["1.json", "2.json"]
    assert config.retry_join == ["10.0.0.1:8500"]


def test_legacy_token_names_map_to_the_current_ones():
    config, _ = load_config_documents([("a.json", {"acl": {"tokens": {"master": "m", "agent_master": "r"}}})])
    assert (config.acl.initial_management, config.acl.agent_recovery) == ("m", "r")


def test_consul_keys_tether_does_not_implement_are_named_in_one_warning():
    _, warnings = load_config_documents([("a.json", {"ui": True, "encrypt": "k", "telemetry": {},
                                                      "acl": {"policy_ttl": "30s"}})])
    assert len(warnings) == 1
    for key in ("ui", "encrypt", "telemetry", "acl.policy_ttl"):
        assert key in warnings[0]


@pytest.mark.parametrize("doc,named", [
    ({"datacentre": "a"}, "'datacentre'"),  # neither Tether's nor Consul's
    ({"acl": {"enabld": True}}, "'acl.enabld'"),
    ({"acl_default_policy": "deny"}, "acl { ... }"),  # Consul's pre-1.4 key: refused, never ignored
    ({"verify_incoming": True}, "no TLS"),  # ignoring it would leave the API less safe than expected
    ({"acl": {"default_policy": "maybe"}}, "allow or deny"),
    ({"acl": {"down_policy": "retry"}}, "extend-cache"),
    ({"acl": {"token_ttl": "soon"}}, "acl.token_ttl"),
    ({"ports": {"http": "8500"}}, "ports.http"),
    ({"http_config": {"block_endpoints": ["/v1/acl"]}}, "use ACLs"),
])
def test_bad_keys_are_refused_with_the_key_and_the_file(doc, named):
    with pytest.raises(InvalidInput) as info:
        load_config_documents([("conf/x.json", doc)])
    assert named in info.value.message and "conf/x.json" in info.value.message, info.value.message


def test_every_problem_of_a_file_is_reported_at_once():
    with pytest.raises(InvalidInput) as info:
        load_config_documents([("x.json", {"foo": 1, "bar": 2, "acl": {"enabled": "yes"}})])
    for word in ("'foo'", "'bar'", "acl.enabled"):
        assert word in info.value.message


def test_hcl_syntax_errors_name_line_and_column():
    with pytest.raises(InvalidInput) as info:
        parse_hcl('acl {\n  enabled = \n}', source="a.hcl")
    assert "a.hcl: line 2, column 13: unexpected '}'" == info.value.message


def test_http_config_origins_and_hosts_are_read_and_checked():
    cfg, _ = load_config_documents([("a.json", {"http_config": {"allowed_origins": ["https://ui.example.com"],
                                                                "allowed_hosts": ["tether.example.com"]}})])
    assert cfg.allowed_origins == ["https://ui.example.com"] and cfg.allowed_hosts == ["tether.example.com"]
    with pytest.raises(InvalidInput) as info:
        load_config_documents([("a.json", {"http_config": {"allowed_origins": ["*"], "allowed_hosts": ["h:1"]}})])
    assert "http_config.allowed_origins: '*' is not an origin" in info.value.message
    assert "http_config.allowed_hosts: 'h:1' is not a host name" in info.value.message
