"""The static config file of an egress proxy: every problem reported at once."""

from __future__ import annotations

import json

import pytest

from tether.core.errors import InvalidInput
from tether.core.external import OutboundMode
from tether.proxy.egress.config import load_egress_config, parse_egress_config


def test_a_good_config_loads_with_its_registry(tmp_path):
    (tmp_path / "egress.yaml").write_text("apiVersion: tether.dev/v1\nkind: OutboundPolicy\nmetadata: {name: mesh}\n"
                                          "spec: {mode: REGISTRY_ONLY}\n")
    (tmp_path / "c.json").write_text(json.dumps({
        "service": "ratings", "outbound": "127.0.0.1:15001", "egress_file": "egress.yaml",
        "tls": {"cert_file": "a.crt", "key_file": "a.key", "roots_file": "ca.pem", "spiffe_id": "spiffe://td/x"},
        "mesh": [{"name": "egress-gateway", "spiffe_id": "spiffe://td/ns/default/dc/dc1/svc/egress-gateway",
                  "instances": ["198.51.100.20:8443"]}]}))
    cfg = load_egress_config(tmp_path / "c.json")
    assert cfg.outbound == ("127.0.0.1", 15001) and cfg.tls.cert_file == tmp_path / "a.crt"
    assert cfg.load_registry().policy.mode == OutboundMode.REGISTRY_ONLY
    assert cfg.mesh[0].instances[0].address == "198.51.100.20:8443"


def test_every_problem_is_named_at_once():
    with pytest.raises(InvalidInput) as err:
        parse_egress_config({"outbound": "nope", "tls": {"cert_file": "a"}, "bogus": 1, "peek_timeout_ms": -1,
                             "mesh": [{"name": "gw", "spiffe_id": "http://x", "instances": ["x"]}],
                             "access_log": {"format": "xml"}, "max_pending_handshakes": "many"})
    message = str(err.value)
    for fragment in ("config.bogus: unknown key", "config.service: required", "config.tls.key_file: required",
                     "config.outbound: expected \"host:port\"", "config.peek_timeout_ms", "is not a spiffe:// URI",
                     "config.mesh[0].instances[0]", "config.access_log.format",
                     "config.max_pending_handshakes: 'many' must be a whole number"):
        assert fragment in message, fragment


def test_a_bad_egress_file_is_refused_with_its_name(tmp_path):
    (tmp_path / "egress.yaml").write_text("apiVersion: tether.dev/v1\nkind: ExternalService\nmetadata: {name: x}\n"
                                          "spec: {hosts: ['*.example.com'], resolution: DNS, ports: "
                                          "[{number: 443, name: tls, protocol: TLS}]}\n")
    (tmp_path / "c.json").write_text(json.dumps({
        "service": "gw", "gateway": "0.0.0.0:8443", "egress_file": "egress.yaml",
        "tls": {"cert_file": "a", "key_file": "b", "roots_file": "c", "spiffe_id": "spiffe://td/x"}}))
    with pytest.raises(InvalidInput, match="wildcard, which resolution DNS cannot resolve"):
        load_egress_config(tmp_path / "c.json")
