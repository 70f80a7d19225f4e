"""Intentions: model validation (Consul's limits), precedence, matching, Consul JSON shape.

Rows cite their source: [C-docs] = hashicorp/consul website/content/docs/connect/intentions/
index.mdx ("Precedence and match order"); [C-src] = agent/structs/intention.go;
REFERENCE = /work/shared/REFERENCE.md section 1.5.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import InvalidInput
from tether.core.intentions import (
    META_MAX_PAIRS,
    Intention,
    compute_precedence,
    format_intention,
    intention_key,
    match_intention,
    parse_intention,
    sort_key,
)

UUID = "e9ebc19f-d481-42b1-4871-4d298d3acd5c"


@pytest.mark.parametrize(
    ("source", "destination", "precedence", "cite"),
    [
        ("web", "db", 9, "[C-docs] table row 9: exact/exact/exact/exact"),
        ("*", "db", 8, "[C-docs] table row 8: exact ns, `*` source, exact destination"),
        ("web", "*", 6, "[C-docs] table row 6: exact source, `*` destination name"),
        ("*", "*", 5, "[C-docs] table row 5: exact ns both sides, `*` names"),
    ],
)
def test_precedence_is_consuls_ce_table(source: str, destination: str, precedence: int, cite: str) -> None:
    # [C-docs] "In Consul OSS, the only allowable value for either namespace field is
    # "default"" — so only rows 9, 8, 6 and 5 occur (REFERENCE 1.5, last line of the table).
    assert compute_precedence(source, destination) == precedence, cite
    assert Intention(source, destination, "allow").precedence == precedence


def test_destination_specificity_counts_before_source() -> None:
    # [C-src] UpdatePrecedence: the destination sets the maximum, the source subtracts.
    assert compute_precedence("*", "db") > compute_precedence("web", "*")


def test_deny_sorts_before_allow_at_equal_precedence() -> None:
    # [C-docs] "Consul enforces deny over allow if match criteria are weighted equally."
    allow, deny = Intention("web", "db", "allow"), Intention("web", "db", "deny")
    assert sorted([allow, deny], key=sort_key)[0] is deny
    assert sorted([deny, allow], key=sort_key)[0] is deny


def test_evaluation_order_is_by_precedence() -> None:
    ints = [Intention("*", "*", "allow"), Intention("web", "*", "allow"), Intention("*", "db", "allow"), Intention("web", "db", "allow")]
    assert [i.precedence for i in sorted(ints, key=sort_key)] == [9, 8, 6, 5]


@pytest.mark.parametrize(
    ("source", "destination", "src", "dst", "expected"),
    [
        ("web", "db", "web", "db", True),
        ("web", "db", "api", "db", False),
        ("*", "db", "api", "db", True),
        ("web", "*", "web", "cache", True),
        ("*", "*", "x", "y", True),
        ("web", "*", "api", "db", False),
    ],
)
def test_match_intention(source: str, destination: str, src: str, dst: str, expected: bool) -> None:
    assert match_intention(Intention(source, destination, "allow"), src, dst) is expected


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"source_name": "we*b"}, "SourceName 'we*b': '*' may only stand alone"),  # [C-src] partial wildcard
        ({"destination_name": "d*"}, "DestinationName 'd*'"),
        ({"source_name": ""}, "SourceName must be set"),  # [C-src] "SourceName must be set"
        ({"destination_name": "bad_name"}, "DestinationName: service name 'bad_name' is invalid"),
        ({"source_name": "a.b"}, "SourceName: service name 'a.b' is invalid"),
        ({"action": "permit"}, "Action 'permit' must be 'allow' or 'deny'"),  # [C-src] Validate
        ({"source_type": "external"}, "SourceType 'external' must be 'consul'"),
        ({"description": "x" * 513}, "Description is 513 characters; the limit is 512"),
        ({"meta": {f"k{i}": "v" for i in range(META_MAX_PAIRS + 1)}}, "Meta has 65 pairs; the limit is 64"),
        ({"meta": {"k" * 129: "v"}}, "is longer than 128"),
        ({"meta": {"k": "v" * 513}}, "Meta value for 'k' is longer than 512"),
        ({"id": "not-a-uuid"}, "ID 'not-a-uuid' is not a UUID"),
        ({"create_index": -1}, "CreateIndex -1"),
    ],
)
def test_invalid_intentions_name_the_value(kwargs: dict, needle: str) -> None:
    base = {"source_name": "web", "destination_name": "db", "action": "allow"}
    with pytest.raises(InvalidInput) as exc:
        Intention(**{**base, **kwargs})
    assert needle in exc.value.message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as exc:
        Intention("we*b", "", "maybe", source_type="x")  # type: ignore[arg-type]
    msg = exc.value.message
    for needle in ("SourceName", "DestinationName", "Action", "SourceType"):
        assert needle in msg


def test_limits_at_the_edge_are_accepted() -> None:
    i = Intention("web", "db", "deny", "d" * 512, {f"k{n}": "v" * 512 for n in range(64)}, id=UUID, create_index=3, modify_index=4)
    assert i.id == UUID and len(i.meta) == 64


def test_meta_is_read_only_and_intentions_are_hashable() -> None:
    i = Intention("web", "db", "allow", meta={"team": "a"})
    with pytest.raises(TypeError):
        i.meta["team"] = "b"  # type: ignore[index]
    assert {i, Intention("web", "db", "allow", meta={"team": "a"})} == {i}


def test_intention_key() -> None:
    assert intention_key("web", "db") == "web/db"
    assert Intention("*", "db", "allow").key == "*/db"
    assert intention_key("web", "db") != intention_key("db", "web")


# --- Consul JSON shape ------------------------------------------------------------------------------


def test_parse_consul_body() -> None:
    # REFERENCE 1.5: legacy create body {SourceName, DestinationName, SourceType, Action, Description, Meta}.
    body = {"SourceName": "web", "DestinationName": "db", "SourceType": "consul", "Action": "deny",
            "Description": "no", "Meta": {"owner": "ops"}, "SourceNS": "default", "Precedence": 1}
    i = parse_intention(body)
    assert (i.source_name, i.destination_name, i.action, i.description, dict(i.meta)) == ("web", "db", "deny", "no", {"owner": "ops"})
    assert i.precedence == 9  # read-only: the given Precedence is ignored


def test_parse_is_case_insensitive_like_gos_json_decoder() -> None:
    assert parse_intention({"sourcename": "web", "destinationName": "db", "action": "allow"}).source_name == "web"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"SourceName": "web", "DestinationName": "db", "Action": "allow", "Colour": "red"}, "Intention.Colour: unknown field"),
        ({"SourceName": "web", "DestinationName": "db", "Permissions": [{"Action": "allow"}]}, "L7 permissions are not supported"),
        ({"SourceName": "web", "DestinationName": "db", "Action": "allow", "SourceNS": "*"}, "SourceNS '*' needs the name '*'"),
        ({"SourceName": "web", "DestinationName": "db", "Action": "allow", "DestinationNS": "a.b"}, "DestinationNS: namespace 'a.b'"),
        ({"SourceName": "web", "DestinationName": "db", "Action": "allow", "SourcePartition": "p"}, "SourcePartition: 'p' is not supported"),
        ({"SourceName": "web", "DestinationName": "db", "Action": "allow", "SourcePeer": "other"}, "SourcePeer: 'other'"),
        ({"SourceName": "web", "DestinationName": "db"}, "Action: required"),
        ({"SourceName": "web", "DestinationName": "db", "Action": "allow", "Meta": ["x"]}, "Meta must be a map"),
        ("[]", "expected a JSON object"),
    ],
)
def test_parse_refuses(body: object, needle: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_intention(body)
    assert needle in exc.value.message


def test_format_is_consuls_shape() -> None:
    i = Intention("web", "db", "allow", id=UUID, create_index=5, modify_index=7)
    assert format_intention(i) == {
        "ID": UUID, "SourceNS": "default", "SourceName": "web", "DestinationNS": "default", "DestinationName": "db",
        "SourceType": "consul", "Action": "allow", "Description": "", "Meta": {}, "Precedence": 9,
        "CreateIndex": 5, "ModifyIndex": 7,
    }


names = st.one_of(st.just("*"), st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z"))
meta = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3)


@given(names, names, st.sampled_from(["allow", "deny"]), st.text(max_size=20), meta, st.one_of(st.none(), st.uuids().map(str)))
def test_format_then_parse_round_trips(src: str, dst: str, action: str, description: str, m: dict, ident: str | None) -> None:
    i = Intention(src, dst, action, description, m, id=ident)  # type: ignore[arg-type]
    again = parse_intention(format_intention(i))
    assert again == i and again.precedence == i.precedence
