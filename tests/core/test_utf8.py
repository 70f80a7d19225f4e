"""Text must be text: request targets UTF-8 once percent-decoded (never U+FFFD in a key),
JSON strings without lone surrogates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from urllib.parse import quote

from tether.core.errors import InvalidInput
from tether.core.utf8 import check_json_text, target_problem


@pytest.mark.parametrize("path, query, words", [
    (b"/v1/kv/%ff%fe", b"", "path: byte 0xff at offset 7"),
    (b"/v1/kv/a%c3", b"", "path: byte 0xc3"),              # a truncated sequence
    (b"/v1/kv/%ed%a0%80", b"", "path: byte 0xed"),         # an encoded surrogate is not UTF-8
    (b"/v1/health/service/x", b"tag=%80", "query: byte 0x80 at offset 4"),
])
def test_not_utf8_is_named(path, query, words):
    assert words in target_problem(path, query)


@pytest.mark.parametrize("path, query", [
    (b"/v1/kv/caf%C3%A9", b""),
    (b"/v1/kv/%E2%9C%93/a%20b", b"recurse&separator=%2F"),
    (b"/v1/catalog/services", b"filter=a+b"),
])
def test_utf8_passes(path, query):
    assert target_problem(path, query) is None


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_any_text_percent_encoded_passes(text):
    assert target_problem(b"/v1/kv/" + quote(text).encode(), quote(text).encode()) is None


@pytest.mark.parametrize("body", [b'"\\udcff"', b'{"\\ud800": 1}', b'["ok", {"a": "x\\uDFFFy"}]'])
def test_lone_surrogates_in_json_are_refused(body):
    with pytest.raises(InvalidInput, match="half of a UTF-16 surrogate pair"):
        check_json_text(body, json.loads(body))


@pytest.mark.parametrize("body", [b'"\\ud83d\\ude00"', b'"\\\\udcff"', b'"caf\\u00e9"', b'{"a": [1, null]}'])
def test_pairs_escaped_backslashes_and_plain_text_pass(body):
    check_json_text(body, json.loads(body))
