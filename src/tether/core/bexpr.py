"""Consul's `filter` expressions (HashiCorp's bexpr grammar): a parser and an evaluator, pure.

    expression  := or
    or          := and ("or" and)*
    and         := not ("and" not)*
    not         := "not" not | "(" expression ")" | match
    match       := selector ("==" | "!=") value
                 | selector "is" ["not"] "empty"
                 | value ["not"] "in" selector
                 | selector ["not"] ("contains" | "matches") value
    selector    := name ("." name | "[" string "]")*        e.g. Service.Tags, Meta.env, Meta["a.b"]
    value       := "string" | `raw string` | a bare word (number, true, false, name)

`parse_filter(text)` returns a Filter, or raises InvalidInput naming the position (1-based)
of the problem. `Filter.matches(doc)` evaluates it over a JSON document: `==` compares with
the field's type (a number, a bool or a string), `in`/`contains` test membership of a
list, a key of a map or a substring of a string, `matches` is a regular expression search,
`is empty` is true for an empty or missing value. A selector whose first name is not a
field of the document is an error (a misspelt field never silently filters out
everything); a missing key of a map (`Meta.absent`) is simply empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from tether.core.errors import InvalidInput

_TOKEN = re.compile(r"""\s*(?:(?P<num>-?\d+\.\d+(?![\w.]))|(?P<op>==|!=|\(|\)|\[|\]|\.)"""
                    r"""|(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<word>[^\s()\[\]."=!`]+))""")
_KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "is", "empty"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # "op", "str", "word", "end"
    text: str
    pos: int  # 1-based column


class Filter:
    def __init__(self, text: str, test: Callable[[Any], bool]) -> None:
        self.text, self._test = text, test

    def matches(self, doc: Any) -> bool:
        return self._test(doc)


def parse_filter(text: str) -> Filter:
    tokens = _tokenize(text)
    parser = _Parser(tokens)
    test = parser.expression()
    if parser.peek().kind != "end":
        parser.fail("expected 'and', 'or' or the end of the expression")
    return Filter(text, test)


def _tokenize(text: str) -> list[_Tok]:
    out, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            if text[at:].strip() == "":
                break
            bad = at + len(text[at:]) - len(text[at:].lstrip())
            raise InvalidInput(f"filter: syntax error at position {bad + 1}: unexpected {text[bad]!r}")
        kind = match.lastgroup or "end"
        out.append(_Tok(kind, match.group(kind), match.start(kind) + 1))
        at = match.end()
    out.append(_Tok("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens, self.at = tokens, 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.tokens[min(self.at + ahead, len(self.tokens) - 1)]

    def take(self) -> _Tok:
        tok = self.peek()
        self.at += 1
        return tok

    def word(self, *words: str) -> bool:
        tok = self.peek()
        if tok.kind == "word" and tok.text in words:
            self.at += 1
            return True
        return False

    def fail(self, expected: str) -> None:
        tok = self.peek()
        near = f"near {tok.text!r}" if tok.kind != "end" else "at the end"
        raise InvalidInput(f"filter: syntax error at position {tok.pos} ({near}): {expected}")

    def expression(self) -> Callable[[Any], bool]:
        left = self.conjunction()
        while self.word("or"):
            right = self.conjunction()
            left = (lambda a, b: lambda d: a(d) or b(d))(left, right)
        return left

    def conjunction(self) -> Callable[[Any], bool]:
        left = self.negation()
        while self.word("and"):
            right = self.negation()
            left = (lambda a, b: lambda d: a(d) and b(d))(left, right)
        return left

    def negation(self) -> Callable[[Any], bool]:
        if self.word("not"):
            inner = self.negation()
            return lambda d: not inner(d)
        if self.peek().text == "(" and self.peek().kind == "op":
            self.take()
            inner = self.expression()
            if self.take().text != ")":
                self.at -= 1
                self.fail("expected ')'")
            return inner
        return self.match()

    def match(self) -> Callable[[Any], bool]:
        # `value [not] in selector`: a value first, then `in`
        if self._starts_in():
            value = self.value()
            negate = self.word("not")
            self.word("in")
            path = self.selector()
            return _negated(negate, lambda d: _contains(_resolve(d, path), value))
        path = self.selector()
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("==", "!="):
            self.take()
            value = self.value()
            equal = lambda d: _equals(_resolve(d, path), value)  # noqa: E731
            return equal if tok.text == "==" else (lambda d: not equal(d))
        if self.word("is"):
            negate = self.word("not")
            if not self.word("empty"):
                self.fail("expected 'empty' after 'is'")
            return _negated(negate, lambda d: _empty(_resolve(d, path)))
        negate = self.word("not")
        if self.word("contains"):
            value = self.value()
            return _negated(negate, lambda d: _contains(_resolve(d, path), value))
        if self.word("matches"):
            at = self.peek().pos
            pattern = self.value()
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise InvalidInput(f"filter: bad regular expression at position {at}: {exc}") from None
            return _negated(negate, lambda d: _matches(_resolve(d, path), regex))
        self.fail("expected ==, !=, is [not] empty, [not] contains, [not] matches or [not] in")
        raise AssertionError("unreachable")

    def _starts_in(self) -> bool:
        """A match of the `value [not] in selector` form (the value is one token)."""
        nxt = self.peek(1)
        if nxt.kind == "word" and nxt.text == "in":
            return True
        return nxt.kind == "word" and nxt.text == "not" and self.peek(2).text == "in" and self.peek(2).kind == "word"

    def selector(self) -> tuple[str, ...]:
        tok = self.take()
        if tok.kind != "word" or tok.text in _KEYWORDS:
            self.at -= 1
            self.fail("expected a selector (a field name such as Service or Meta.env)")
        path = [tok.text]
        while self.peek().kind == "op" and self.peek().text in (".", "["):
            if self.take().text == ".":
                part = self.take()
                if part.kind != "word":
                    self.at -= 1
                    self.fail("expected a field name after '.'")
                path.append(part.text)
            else:
                part = self.take()
                if part.kind != "str" or self.take().text != "]":
                    self.at -= 1
                    self.fail('expected ["key"]')
                path.append(_unquote(part.text))
        return tuple(path)

    def value(self) -> str:
        tok = self.take()
        if tok.kind == "str":
            return _unquote(tok.text)
        if tok.kind == "num" or (tok.kind == "word" and tok.text not in _KEYWORDS):
            return tok.text
        self.at -= 1
        self.fail("expected a value (a \"quoted string\", a number, true or false)")
        raise AssertionError("unreachable")


_MISSING = object()


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _resolve(doc: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(doc, dict) or path[0] not in doc:
        raise InvalidInput(f"filter: selector {'.'.join(path)!r} is not a field of the listed objects")
    value = doc[path[0]]
    for part in path[1:]:
        value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _equals(field: Any, value: str) -> bool:
    if field is _MISSING or field is None:
        return value == ""
    if isinstance(field, bool):
        return value in ("true", "false") and field == (value == "true")
    if isinstance(field, (int, float)):
        try:
            return field == float(value)
        except ValueError:
            return False
    return str(field) == value


def _contains(field: Any, value: str) -> bool:
    if isinstance(field, list):
        return any(str(item) == value for item in field)
    if isinstance(field, dict):
        return value in field
    if isinstance(field, str):
        return value in field
    return False


def _matches(field: Any, regex: re.Pattern[str]) -> bool:
    if isinstance(field, list):
        return any(isinstance(item, str) and regex.search(item) for item in field)
    return isinstance(field, str) and regex.search(field) is not None


def _empty(field: Any) -> bool:
    return field is _MISSING or field is None or (isinstance(field, (list, dict, str)) and len(field) == 0)


def _negated(negate: bool, test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return (lambda d: not test(d)) if negate else test
