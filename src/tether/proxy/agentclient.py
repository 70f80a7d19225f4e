"""A tiny asyncio HTTP/1.1 client for the local agent's API, for the sidecar's config watches.

The proxy process must stay small (idle RSS budget 35 MB), so it does not load httpx: every
request here is a GET (or a PUT of a small JSON body) to the local agent, one connection per
request (`Connection: close`), and the answer is read to EOF. A blocking query holds its
connection for up to `wait` seconds, so the read timeout is always the wait plus a margin.

Failures are translated once, here: an unreachable agent, a reset or a timeout raise
`Unavailable`; 404 raises `NotFound`, 403 `PermissionDenied` (an ACL refusal); any other
non-2xx raises `Unavailable` with the agent's one-line answer (the agent answers 4xx/5xx in plain text, as Consul does).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, urlencode

from tether.core.errors import InvalidInput, NotFound, PermissionDenied, Unavailable

#: Seconds to open a TCP connection to the local agent (it is on this host).
CONNECT_TIMEOUT = 5.0
#: Extra seconds granted to a blocking query past its `wait` (the agent adds up to wait/16 jitter).
WAIT_MARGIN = 10.0
#: Answers larger than this are refused (a full authz snapshot of a big mesh is a few MB).
MAX_BODY = 64 << 20


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: Any  # decoded JSON

    @property
    def index(self) -> int:
        """X-Consul-Index as an int (0 when absent or unparseable)."""
        try:
            return int(self.headers.get("x-consul-index", "0"))
        except ValueError:
            return 0


def parse_addr(addr: str) -> tuple[str, int]:
    """(host, port) from `host:port`, `[v6]:port` or `http://host:port`."""
    text = addr.removeprefix("http://").rstrip("/")
    if text.startswith("https://"):
        raise InvalidInput(f"agent address {addr!r}: the proxy talks plain HTTP to its local agent; drop https://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInput(f"agent address {addr!r}: expected HOST:PORT, e.g. 127.0.0.1:8500")
    return host.strip("[]") or "127.0.0.1", int(port)


class AgentClient:
    """GET/PUT JSON on the local agent. Stateless: safe to share between watch tasks."""

    def __init__(self, addr: str, token: str | None = None) -> None:
        self.host, self.port = parse_addr(addr)
        self.addr = f"{self.host}:{self.port}"
        self.token = token

    async def get(self, path: str, params: Mapping[str, Any] | None = None, *, wait: float = 0.0) -> Reply:
        return await self._request("GET", path, params, None, wait)

    async def put(self, path: str, body: Any = None) -> Reply:
        return await self._request("PUT", path, None, body, 0.0)

    async def _request(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any,
                       wait: float) -> Reply:
        target = quote(path, safe="/:@-._~")
        if params:
            target += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            raise Unavailable(f"cannot reach the agent at {self.addr}: {_why(e)}") from None
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            head = [f"{method} {target} HTTP/1.1", f"Host: {self.addr}", "Connection: close",
                    "Accept: application/json", f"Content-Length: {len(payload)}"]
            if body is not None:
                head.append("Content-Type: application/json")
            if self.token:
                head.append(f"X-Consul-Token: {self.token}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            raw = await asyncio.wait_for(_read_to_eof(reader), wait + WAIT_MARGIN)
        except (OSError, asyncio.TimeoutError) as e:
            raise Unavailable(f"agent at {self.addr}: {method} {path}: {_why(e)}") from None
        finally:
            writer.close()
        return _parse_reply(raw, f"{method} {path}", self.addr)


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    chunks, total = [], 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > MAX_BODY:
            raise OSError(f"answer larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _why(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.errno:  # the same words on both loops (asyncio says "Connect call failed")
        return os.strerror(e.errno)
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _parse_reply(raw: bytes, what: str, addr: str) -> Reply:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise Unavailable(f"agent at {addr}: {what}: connection closed before a complete answer")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise Unavailable(f"agent at {addr}: {what}: not an HTTP answer: {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    text = body.decode("utf-8", "replace")
    if status == 404:
        raise NotFound(f"agent at {addr}: {what}: {text.strip() or 'not found'}")
    if status == 403:  # an ACL refusal: not worth retrying with the same token
        raise PermissionDenied(f"agent at {addr}: {what}: {text.strip() or 'permission denied'}")
    if not 200 <= status < 300:
        raise Unavailable(f"agent at {addr}: {what}: HTTP {status}: {text.strip()[:300]}")
    try:
        decoded = json.loads(text) if text.strip() else None
    except ValueError:
        raise Unavailable(f"agent at {addr}: {what}: answer is not JSON") from None
    return Reply(status, headers, decoded)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)
