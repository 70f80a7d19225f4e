"""SPIFFE IDs: parse/format round trip, Consul's percent-decoding, refusals, SNI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import InvalidInput
from tether.core.spiffe import (
    SpiffeId,
    SpiffeKind,
    format_spiffe_id,
    format_upstream_sni,
    match_trust_domain,
    parse_spiffe_id,
    service_id,
    signing_id,
    validate_service_name,
    validate_trust_domain,
)

TD = "0b7501f9-e8de-4ae0-b347-1aff34f28ed1.tether"

trust_domains = st.from_regex(r"\A[a-z0-9_-]{1,20}(\.[a-z0-9_-]{1,20}){0,3}\Z")
segments = st.text(min_size=1, max_size=30)


@given(td=trust_domains, ns=segments, dc=segments, svc=segments)
def test_parse_format_round_trip(td, ns, dc, svc):
    x = SpiffeId(td, ns, dc, svc)
    assert parse_spiffe_id(format_spiffe_id(x)) == x


@given(td=trust_domains)
def test_signing_round_trip(td):
    x = signing_id(td)
    assert format_spiffe_id(x) == f"spiffe://{td}"
    assert parse_spiffe_id(format_spiffe_id(x)) == x


@given(st.text(max_size=80))
def test_parse_raises_only_invalid_input(text):
    try:
        parse_spiffe_id(text)
    except InvalidInput:
        pass


@given(st.text(alphabet="spifE:/%.2Fab-ns/dcvc", max_size=60))
def test_parse_raises_only_invalid_input_near_misses(text):
    try:
        parse_spiffe_id("spiffe://" + text)
    except InvalidInput:
        pass


def test_parse_service():
    x = parse_spiffe_id(f"spiffe://{TD}/ns/default/dc/dc1/svc/web")
    assert x == SpiffeId(TD, "default", "dc1", "web") and x.kind is SpiffeKind.SERVICE
    assert str(x) == x.uri == f"spiffe://{TD}/ns/default/dc/dc1/svc/web"


def test_percent_decoding_as_consul():
    x = parse_spiffe_id(f"spiffe://{TD}/ns/default/dc/dc%201/svc/a%2Fb")
    assert (x.datacenter, x.service) == ("dc 1", "a/b")
    assert format_spiffe_id(x) == f"spiffe://{TD}/ns/default/dc/dc%201/svc/a%2Fb"


def test_trust_domain_is_case_insensitive():
    upper = parse_spiffe_id(f"spiffe://{TD.upper()}/ns/default/dc/dc1/svc/web")
    assert upper == service_id(TD, "dc1", "web")
    assert SpiffeId("EXAMPLE.Tether", "default", "dc1", "web").trust_domain == "example.tether"
    assert match_trust_domain(signing_id(TD.upper()), upper)
    assert not match_trust_domain(signing_id("other.tether"), upper)
    assert not match_trust_domain(upper, upper)  # only a signing ID signs


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://x.tether/ns/default/dc/dc1/svc/web", "must start with"),
        ("spiffe:///ns/default/dc/dc1/svc/web", "no trust domain"),
        ("spiffe://x.tether/ns/default/dc/dc1/svc/web?a=b", "query"),
        ("spiffe://x.tether/ns/default/dc/dc1/svc/web#f", "query or fragment"),
        ("spiffe://user@x.tether/ns/default/dc/dc1/svc/web", "user info or a port"),
        ("spiffe://x.tether:443/ns/default/dc/dc1/svc/web", "user info or a port"),
        ("spiffe://x tether/ns/default/dc/dc1/svc/web", "trust domain"),
        ("spiffe://x.tether/", "not a service identity"),
        ("spiffe://x.tether/agent/client/dc/dc1/id/abc", "not a service identity"),
        ("spiffe://x.tether/ap/p1/ns/default/dc/dc1/svc/web", "not a service identity"),
        ("spiffe://x.tether/ns/default/dc/dc1/svc/", "not a service identity"),
        ("spiffe://x.tether/ns/default/dc/dc1/svc/web/extra", "not a service identity"),
        ("spiffe://x.tether/ns/default/dc/dc1/svc/we%zzb", "malformed %-escape"),
        ("spiffe://x.tether/ns/default/dc/dc1/svc/%ff", "UTF-8"),
    ],
)
def test_refusals(uri, message):
    with pytest.raises(InvalidInput, match=message):
        parse_spiffe_id(uri)


@pytest.mark.parametrize("name", ["web", "a", "web-2", "Web", "x" * 63])
def test_valid_service_names(name):
    assert validate_service_name(name) == name


@pytest.mark.parametrize("name", ["", "-web", "web-", "a.b", "a_b", "x" * 64, "we b", "*", "wéb"])
def test_invalid_service_names(name):
    with pytest.raises(InvalidInput, match="service name"):
        validate_service_name(name)


@pytest.mark.parametrize("td", ["", ".x", "x.", "a..b", "a b", "a/b"])
def test_invalid_trust_domains(td):
    with pytest.raises(InvalidInput, match="trust domain"):
        validate_trust_domain(td)


def test_service_id_validates_its_parts():
    assert service_id(TD.upper(), "dc1", "web").trust_domain == TD
    with pytest.raises(InvalidInput, match="datacenter"):
        service_id(TD, "dc.1", "web")
    with pytest.raises(InvalidInput, match="service name"):
        service_id(TD, "dc1", "web.x")


def test_upstream_sni():
    assert format_upstream_sni("api", "default", "dc2", TD) == f"api.default.dc2.internal.{TD}"
    assert format_upstream_sni("api", "default", "dc2", TD.upper(), subset="v1") == f"v1.api.default.dc2.internal.{TD}"
