"""How deeply a request body nests, checked before it is parsed. Pure.

    check_json_depth(body)           # raises InvalidInput past MAX_DEPTH levels
    yaml_depth_problem(text, source)  # the error line, or None

Python's JSON and YAML parsers recurse once per level, so a 2 KB body of a thousand
brackets ends in RecursionError (a 500) in the parser or in whatever walks the result
afterwards. No API document of Tether's (or Consul's) comes near the limit: the deepest
are service definitions with an opaque proxy `Config`, a handful of levels.

The JSON check scans the text without parsing it (brackets outside strings counted), so it
costs one linear pass and never recurses; the YAML check walks PyYAML's event stream,
which is iterative (only PyYAML's composer recurses).
"""

from __future__ import annotations

import re

import yaml

from tether.core.errors import InvalidInput

#: Levels of arrays/objects a body may nest. Generous for real documents, far below the
#: interpreter's recursion limit (1,000), which the parsers and our own walkers share.
MAX_DEPTH = 64

#: What the scan looks at: an escape (skipped whole, so an escaped quote is not a quote), a
#: quote (strings toggle; brackets inside one are data), a bracket. One linear pass.
_JSON_TOKEN = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays/objects in `body` (0 for a scalar). For malformed JSON
    the count is still an upper bound of what a parser would recurse into."""
    depth = deepest = 0
    in_string = False
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or len(token) == 2:
            continue
        elif token in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_json_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    depth = json_depth(body)
    if depth > limit:
        raise InvalidInput(f"Request decode failed: JSON nests {depth} levels deep; the limit is {limit}")


def yaml_depth(text: str | bytes, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of sequences/mappings in a YAML stream, counted up to limit + 1
    (the scan stops there). Syntax errors are left for the real parse to report."""
    depth = deepest = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                deepest = max(deepest, depth)
                if deepest > limit:
                    break
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass  # the parse that follows reports it, with its line
    return deepest


def yaml_depth_problem(text: str | bytes, source: str, limit: int = MAX_DEPTH) -> str | None:
    """The error line for YAML nested past the limit, or None."""
    if yaml_depth(text, limit) > limit:
        return f"{source}: YAML nests more than {limit} levels deep; the limit is {limit}"
    return None
