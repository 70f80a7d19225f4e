"""Consul-shaped service definitions: every key casing, Consul's defaults, clear errors."""

from __future__ import annotations

import pytest

from tether.core.errors import InvalidInput
from tether.core.registration import (
    SidecarListener, allocate_port, candidate_ports, expand_registration, sidecar_listener,
)
from tether.core.service import parse_check_definition, parse_service_definition

SIDECAR_UPSTREAM = {"destination_name": "db", "local_bind_port": 9191}


def expand(body, used=()):
    return expand_registration(parse_service_definition(body), node="n1", datacenter="dc1", used_ports=used)


@pytest.mark.parametrize("body", [
    {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
        {"DestinationName": "db", "LocalBindPort": 9191}]}}}},
    {"name": "web", "port": 8080, "connect": {"sidecar_service": {"proxy": {"upstreams": [SIDECAR_UPSTREAM]}}}},
    {"name": "web", "port": 8080, "connect": {"sidecarservice": {"proxy": {"upstreams": [
        {"destinationname": "db", "localbindport": 9191}]}}}},  # py-consul's lower-case keys
    {"name": "web", "port": 8080, "connect": {"proxy": {"config": {"upstreams": [SIDECAR_UPSTREAM]}}}},  # Consul 1.2
])
def test_every_spelling_gives_the_same_sidecar(body):
    reg = expand(body)
    web, proxy = reg.services
    assert (web["ID"], web["Service"], web["Port"]) == ("web", "web", 8080)
    assert proxy["ID"] == "web-sidecar-proxy" and proxy["Service"] == "web-sidecar-proxy"
    assert proxy["Kind"] == "connect-proxy" and proxy["Port"] == 21000
    assert proxy["Proxy"]["DestinationServiceName"] == "web"
    assert proxy["Proxy"]["DestinationServiceID"] == "web"
    assert proxy["Proxy"]["LocalServicePort"] == 8080
    assert proxy["Proxy"]["Upstreams"] == [{"DestinationType": "service", "DestinationName": "db", "LocalBindPort": 9191}]
    names = [c["Name"] for c in reg.checks]
    assert names == ["Connect Sidecar Listening", "Connect Sidecar Aliasing web"]
    # Tether's proxy passes its listener check itself (a TCP connect would pass against any
    # process on the port); it starts critical, as every Consul check does.
    assert reg.checks[0]["Definition"] == {"TTL": "15s"} and reg.checks[0]["Status"] == "critical"
    assert reg.checks[1]["Definition"] == {"AliasService": "web"}


def test_managed_proxy_command_is_kept_and_gets_a_tcp_check():
    reg = expand({"name": "web", "port": 1, "connect": {"proxy": {"exec_mode": "daemon", "command": ["my-proxy", "-v"]}}})
    assert reg.services[1]["Proxy"]["Config"] == {"exec_mode": "daemon", "command": ["my-proxy", "-v"]}
    # Another data plane cannot pass a check for itself: Consul's TCP check on its listener.
    assert reg.checks[0]["Definition"] == {"TCP": "127.0.0.1:21000", "Interval": "10s"}


@pytest.mark.parametrize("connect", [
    {"proxy": {"config": {"bind_port": 21500}}},  # Consul 1.2's managed proxy (seed 000's shape)
    {"sidecar_service": {"proxy": {"config": {"bind_port": 21500}}}},
    {"sidecar_service": {"port": 21500}},
])
def test_the_catalog_advertises_where_the_sidecar_listens(connect):
    definition = parse_service_definition({"name": "web", "port": 80, "connect": connect})
    assert sidecar_listener(definition) == SidecarListener("0.0.0.0", 21500)  # the agent chooses nothing
    reg = expand_registration(definition, node="n1", datacenter="dc1", sidecar_port=21001)
    assert reg.services[1]["Port"] == 21500


def test_a_specific_bind_address_is_advertised_and_probed():
    command = {"exec_mode": "daemon", "command": ["my-proxy"]}
    definition = parse_service_definition({"name": "web", "port": 80, "address": "192.0.2.1", "connect": {
        "proxy": {**command, "config": {"bind_address": "127.0.0.2", "bind_port": 21500}}}})
    assert sidecar_listener(definition) == SidecarListener("127.0.0.2", 21500)
    reg = expand_registration(definition, node="n1", datacenter="dc1")
    assert (reg.services[1]["Address"], reg.services[1]["Port"]) == ("127.0.0.2", 21500)
    assert reg.checks[0]["Definition"]["TCP"] == "127.0.0.2:21500"
    # An explicit catalog port differing from bind_port is honoured too: advertised there,
    # while the listener and its check use bind_port.
    definition = parse_service_definition({"name": "web", "port": 80, "connect": {"sidecar_service": {
        "port": 8443, "proxy": {"config": {**command, "bind_address": "::", "bind_port": 21500}}}}})
    reg = expand_registration(definition, node="n1", datacenter="dc1")
    assert (reg.services[1]["Address"], reg.services[1]["Port"]) == ("", 8443)
    assert reg.checks[0]["Definition"]["TCP"] == "[::1]:21500"


def test_the_agent_chooses_among_unused_ports_of_the_range():
    assert list(candidate_ports([21001], (21000, 21003))) == [21000, 21002, 21003]
    definition = parse_service_definition({"name": "web", "connect": {"sidecar_service": {}}})
    assert sidecar_listener(definition) == SidecarListener("0.0.0.0", 0)
    assert sidecar_listener(parse_service_definition({"name": "web"})) is None
    assert expand_registration(definition, node="n1", datacenter="dc1", sidecar_port=21007).services[1]["Port"] == 21007


def test_sidecar_defaults_copy_tags_meta_and_respect_overrides():
    reg = expand({"name": "web", "id": "web-1", "port": 80, "tags": ["a"], "meta": {"k": "v"},
                  "connect": {"sidecar_service": {"port": 21555, "tags": ["proxy"]}}}, used=[21000])
    proxy = reg.services[1]
    assert proxy["ID"] == "web-1-sidecar-proxy" and proxy["Port"] == 21555
    assert proxy["Tags"] == ["proxy"] and proxy["Meta"] == {"k": "v"}
    assert proxy["Proxy"]["DestinationServiceID"] == "web-1"


def test_sidecar_port_skips_used_ports_and_runs_out_clearly():
    assert expand({"name": "web", "connect": {"sidecar_service": {}}}, used=[21000, 21001]).services[1]["Port"] == 21002
    with pytest.raises(InvalidInput, match="no free sidecar port"):
        allocate_port(range(21000, 21256))


def test_check_ids_follow_consul():
    one = expand({"name": "web", "check": {"ttl": "10s"}}).checks
    assert [c["CheckID"] for c in one] == ["service:web"]
    two = expand({"name": "web", "checks": [{"ttl": "10s"}, {"tcp": "127.0.0.1:1", "interval": "5s"}]}).checks
    assert [c["CheckID"] for c in two] == ["service:web:1", "service:web:2"]
    assert [c["Status"] for c in two] == ["critical", "critical"]  # Consul's initial status


@pytest.mark.parametrize("body, message", [
    ({"name": "web", "connect": {"sidecar_service": {"id": "x"}}}, "SidecarService.ID: cannot be set"),
    ({"name": "web", "kind": "connect-proxy"}, "DestinationServiceName: required"),
    ({"name": "web", "proxy": {"destination_service_name": "x"}}, "only allowed with Kind"),
    ({"name": "web", "connect": {"sidecar_service": {"proxy": {"upstreams": [{"destination_name": "db"}]}}}},
     "needs LocalBindPort"),
    ({"name": "web", "meta": {f"k{i}": "v" for i in range(65)}}, "at most 64 Meta pairs"),
    ({"name": "web", "Name": "web2"}, "given twice"),
    ({"name": "web", "check": {"ttl": "10s", "tcp": "127.0.0.1:1", "interval": "1s"}}, "exactly one of"),
    ({"name": "web", "check": {"ttl": "-5s"}}, "must be positive"),
    ({"name": "web", "connect": {"proxy": {"config": {"bind_port": 70000}}}},
     r"Connect\.Proxy\.Config\.bind_port: 70000 must be a TCP port"),
    ({"name": "web", "connect": {"sidecar_service": {"proxy": {"config": {"bind_port": "21000"}}}}},
     r"SidecarService\.Proxy\.Config\.bind_port: '21000' must be"),
    ({"name": "web", "connect": {"sidecar_service": {"proxy": {"config": {"bind_address": "localhost"}}}}},
     r"Config\.bind_address: 'localhost' must be an IP address"),
])
def test_cross_field_errors_name_the_field(body, message):
    with pytest.raises(InvalidInput, match=message):
        parse_service_definition(body)


def test_all_problems_reported_at_once():
    with pytest.raises(InvalidInput) as err:
        parse_service_definition({"nme": "web", "prot": 1, "tags": ["a"]})
    assert "nme: unknown field" in str(err.value) and "prot: unknown field" in str(err.value)


def test_standalone_check_needs_a_name_and_supported_kind():
    with pytest.raises(InvalidInput, match="Name: missing"):
        parse_check_definition({"ttl": "10s"})
    with pytest.raises(InvalidInput, match="GRPC checks are not supported"):
        parse_check_definition({"name": "g", "grpc": "127.0.0.1:1", "interval": "1s"})
    assert parse_check_definition({"name": "t", "id": "mine", "ttl": "1m"}).CheckID == "mine"
