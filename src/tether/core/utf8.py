"""Is a request's text really text? Pure.

    target_problem(b"/v1/kv/%ff%fe", b"")   # -> "path: ... not UTF-8 ..."
    check_json_text(body, json.loads(body))  # InvalidInput for a lone "\\udcff"

The HTTP server decodes the path with `urllib.parse.unquote`, and Starlette the query the
same way: bytes that are not UTF-8 become U+FFFD. KV keys and service names travel in the
path and the query, so `%ff%fe` and `%fe%ff` became the same key, silently. We refuse them
instead: every name in Tether is text, and a name that is not text is a client's mistake.

JSON has the same hole: `"\\udcff"` is valid JSON, but half of a UTF-16 surrogate pair is
no character; Python keeps it in the string, and it fails later, when SQLite or a response
encodes it (a 500).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from tether.core.errors import InvalidInput

#: A \\u escape of a surrogate (D800-DFFF): only then can a decoded value hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _problem(where: str, raw: bytes) -> str | None:
    decoded = unquote_to_bytes(raw)
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"{where}: byte 0x{decoded[exc.start]:02x} at offset {exc.start} of the percent-decoded {where} "
                "is not UTF-8; keys, names and parameters must be UTF-8 text")
    return None


def target_problem(raw_path: bytes, query: bytes) -> str | None:
    """Why the request's path or query is not UTF-8 text after percent-decoding, or None."""
    # `+` means a space in a query, but a space and a `+` are both ASCII: no effect on UTF-8.
    return _problem("path", raw_path) or _problem("query", query)


def check_json_text(body: bytes, value: Any) -> None:
    """Refuse a decoded JSON `value` (of `body`) whose strings hold a lone surrogate."""
    if not _SURROGATE_ESCAPE.search(body):
        return  # the common case: nothing to walk
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"Request decode failed: a JSON string holds \\u{ord(exc.object[exc.start]):04x}, half "
                           "of a UTF-16 surrogate pair; strings must be Unicode text") from None
