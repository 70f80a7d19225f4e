"""Body nesting measured before parsing: the scan agrees with the parsed structure."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tether.core.errors import InvalidInput
from tether.core.nesting import MAX_DEPTH, check_json_depth, json_depth, yaml_depth, yaml_depth_problem


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# Strings full of brackets, quotes and escapes: the scan must not count what is inside them.
TRICKY = st.text(alphabet='[]{}"\\ab\n', max_size=8)
DOCS = st.recursive(st.none() | st.booleans() | st.integers() | TRICKY,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
                    max_leaves=30)


@given(DOCS)
def test_json_scan_agrees_with_the_parsed_depth(doc):
    assert json_depth(json.dumps(doc).encode()) == depth_of(doc)
    assert json_depth(json.dumps(doc, ensure_ascii=False).encode()) == depth_of(doc)


@given(DOCS)
def test_yaml_scan_agrees_with_the_parsed_depth(doc):
    assert yaml_depth(yaml.safe_dump(doc)) == depth_of(doc)


@pytest.mark.parametrize("body, depth", [
    (b"1", 0),
    (b"{}", 1),
    (b'{"a": [[]]}', 3),
    (b'["[[[", "\\"[["]', 1),     # brackets in strings, an escaped quote that does not end one
    (b'"\\\\" [', 1),             # an escaped backslash: the quote after it does end the string
    (b"[" * 1000, 1000),          # unbalanced: counted as far as a parser would go
])
def test_json_depth_table(body, depth):
    assert json_depth(body) == depth


def test_the_limit_is_inclusive_and_the_refusal_names_it():
    check_json_depth(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    with pytest.raises(InvalidInput, match=f"JSON nests {MAX_DEPTH + 1} levels deep; the limit is {MAX_DEPTH}"):
        check_json_depth(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


def test_yaml_limit_in_flow_and_block_style():
    assert yaml_depth_problem("[" * MAX_DEPTH + "]" * MAX_DEPTH, "f") is None
    assert "f: YAML nests more than 64 levels" in yaml_depth_problem("[" * 5000 + "]" * 5000, "f")
    block = "".join(" " * i + "a:\n" for i in range(1200))  # PyYAML's composer: RecursionError
    assert "the limit is 64" in yaml_depth_problem(block, "f")


def test_a_scan_of_quotes_and_escapes_is_linear():
    """An unterminated string of escaped quotes: a backtracking scan would be quadratic."""
    assert json_depth(b'"' + b'\\"' * 400_000 + b"[") == 0


def test_yaml_syntax_errors_are_left_to_the_parser():
    assert yaml_depth_problem("a: [1, 2", "f") is None
