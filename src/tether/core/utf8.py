"""Is a request target UTF-8 once percent-decoded? Pure.

    target_problem(b"/v1/kv/%ff%fe", b"")   # -> "path: ... not UTF-8 ..."

The HTTP server decodes the path with `urllib.parse.unquote`, and Starlette the query the
same way: bytes that are not UTF-8 become U+FFFD. KV keys and service names travel in the
path and the query, so `%ff%fe` and `%fe%ff` became the same key, silently. We refuse them
instead: every name in Tether is text, and a name that is not text is a client's mistake.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes


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
