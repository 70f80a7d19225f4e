"""HCL documents (Consul's ACL rules and agent config files) as plain Python data.

    parse_hcl('service "web" { policy = "write" }\\noperator = "read"')
    == {"service": {"web": {"policy": "write"}}, "operator": "read"}

The parser is python-hcl2 (a maintained HCL2 grammar; Consul's files are HCL1, whose
syntax for what Consul uses — attributes, labelled and unlabelled blocks, lists, objects,
comments — is the same). Its output is normalised into the shape of the equivalent JSON
document, so one validator serves both forms:

  - a labelled block `kind "label" {...}` becomes `{"kind": {"label": {...}}}` (several
    blocks of one kind merge into one object, as in Consul's JSON form);
  - an unlabelled block `kind {...}` becomes `{"kind": [{...}, ...]}`: a list, because
    Consul lets some blocks repeat (`service {...}` twice is two services); callers that
    expect one object take the single element;
  - quoted strings lose their quotes; comments are dropped.

Errors are `InvalidInput` naming the line and column, and the word the parser stopped at.
"""

from __future__ import annotations

import json
from typing import Any

from tether.core.errors import InvalidInput

_BLOCK = "__is_block__"


def parse_hcl(text: str, *, source: str = "HCL") -> dict[str, Any]:
    """`text` as a dict in JSON shape; InvalidInput with line/column on a syntax error."""
    import hcl2  # lark-based: imported only where HCL is read (never on a proxy's path)
    from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput

    try:
        raw = hcl2.loads(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as exc:
        word = _word_at(text, exc)
        if not word:
            raise InvalidInput(f"{source}: line {exc.line}: unexpected end of input (a block or string "
                               "is not closed)") from None
        kind = "unexpected character" if isinstance(exc, UnexpectedCharacters) else "unexpected"
        raise InvalidInput(f"{source}: line {exc.line}, column {exc.column}: {kind} {word!r}") from None
    except (LarkError, ValueError) as exc:
        raise InvalidInput(f"{source}: not valid HCL: {str(exc).splitlines()[0]}") from None
    return _body(raw, source)


def _word_at(text: str, exc: Any) -> str:
    token = getattr(exc, "token", None)
    if token is not None and str(token).strip():
        return str(token).strip().split()[0]
    lines = text.splitlines()
    if 1 <= exc.line <= len(lines):
        rest = lines[exc.line - 1][max(exc.column - 1, 0):].split()
        return rest[0] if rest else ""
    return ""


def _body(raw: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in (_BLOCK, "__comments__", "__inline_comments__"):
            continue
        name = _string(key, source)
        if isinstance(value, list) and value and all(_is_block(v) for v in value):
            out[name] = _blocks(name, value, source)
        else:
            out[name] = _value(value, source)
    return out


def _is_block(item: Any) -> bool:
    """An unlabelled block carries the marker itself; a labelled one one level down per label."""
    if not isinstance(item, dict):
        return False
    return bool(item.get(_BLOCK)) or (len(item) == 1 and _is_block(next(iter(item.values()))))


def _blocks(name: str, items: list[dict[str, Any]], source: str) -> Any:
    if all(item.get(_BLOCK) for item in items):  # unlabelled: a list of bodies
        return [_body(item, source) for item in items]
    merged: dict[str, Any] = {}
    for item in items:
        if item.get(_BLOCK):
            raise InvalidInput(f"{source}: {name}: mixes blocks with and without a label")
        (label, body), = item.items()
        label = _string(label, source)
        if not body.get(_BLOCK):
            raise InvalidInput(f"{source}: {name} {json.dumps(label)}: a block takes one label, not several")
        if label in merged:
            raise InvalidInput(f"{source}: {name} {json.dumps(label)} is defined twice")
        merged[label] = _body(body, source)
    return merged


def _value(value: Any, source: str) -> Any:
    if isinstance(value, str):
        return _string(value, source)
    if isinstance(value, list):
        return [_value(v, source) for v in value]
    if isinstance(value, dict):
        return _body(value, source)
    return value


def _string(text: str, source: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            text = json.loads(text)
        except ValueError:
            text = text[1:-1]
    elif text.startswith("${") and text.endswith("}"):
        raise InvalidInput(f"{source}: {text[2:-1]!r} must be a quoted string")
    if "${" in text:
        raise InvalidInput(f"{source}: {text!r}: interpolation (${{...}}) is not supported")
    return text
