"""The CLI's HTTP client: finds the agent (sdk/addr.py), maps answers onto the error tree.

Built on the standard library's http.client, not httpx: a CLI command is a new process,
and importing httpx costs more than the whole request (docs/performance.md, "CLI
start-up"). One connection per command; JSON in, JSON or bytes out.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

from tether.core.errors import (
    Conflict, InvalidInput, NotFound, PermissionDenied, RateLimited, TetherError, TooLarge, Unavailable,
)
from tether.sdk.addr import resolve_addr, resolve_token

_BY_STATUS = {400: InvalidInput, 403: PermissionDenied, 404: NotFound, 409: Conflict, 413: TooLarge,
              429: RateLimited}
#: What the "cannot reach" message tells the user to check.
_WHERE = "-http-addr, TETHER_HTTP_ADDR or CONSUL_HTTP_ADDR"


@dataclass
class Response:
    status_code: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    reason_phrase: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content) if self.content else None


class _Headers(dict):
    """Case-insensitive lookups on the answer's headers."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = resolve_addr(addr)
        parts = urlsplit(self.base)
        if parts.scheme != "http":
            raise InvalidInput(f"agent address {self.base}: the CLI speaks plain HTTP to its local agent; "
                               "use http://HOST:PORT")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        token = token or resolve_token()
        self._headers = {"X-Consul-Token": token} if token else {}

    def request(self, method: str, path: str, *, ok404: bool = False, check: bool = True,
                params: Mapping[str, Any] | None = None, json: Any = None, content: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        """One request; with `check`, a 4xx/5xx answer raises its TetherError (404 too unless `ok404`)."""
        target = quote(path, safe="/:@-._~!$&'()*+,;=")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            target += "?" + urlencode(query, doseq=True)
        body = content if json is None else jsonlib.dumps(json).encode()
        send = {**self._headers, **(headers or {})}
        if json is not None:
            send["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.request(method, target, body=body, headers=send)
            answer = conn.getresponse()
            response = Response(answer.status, answer.read(),
                                _Headers((k.lower(), v) for k, v in answer.getheaders()), answer.reason)
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise Unavailable(f"cannot reach the Tether agent at {self.base} ({_why(exc)}): is it running? "
                              f"Start one with 'tether agent -dev', or point {_WHERE} at yours") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"request to {self.base}{path} failed: {_why(exc)}") from None
        finally:
            conn.close()
        if check and response.status_code >= 400 and not (ok404 and response.status_code == 404):
            text = response.text.strip()
            message = text.splitlines()[0] if text else response.reason_phrase
            cls = _BY_STATUS.get(response.status_code, Unavailable if response.status_code >= 500 else TetherError)
            raise cls(message)
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        return self.request("PUT", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
