"""The servers an agent knows (`-server-addr a,b,c` / `retry_join`), and failover between them.

Servers on one etcd are interchangeable: each serves any request from its own watch-fed
view of the same store, and every index is etcd's revision, the same number on every
server. So when the server an agent uses stops answering, the agent moves to the next one
and repeats the request; a blocking query repeated there with the same index returns at
once if anything changed meanwhile, so no change is missed.

What is repeated: a request whose connection could not be made (nothing was sent), and
any request the caller marks idempotent (reads, blocking queries, the agent's own
sync/heartbeat/check updates, which state a full desired value). A forwarded write whose
server died mid-request is not repeated: its outcome is unknown, and the client is told
(503). A 5xx answer is not a reason to move: a server that answers is reachable, and a
store outage (etcd without quorum) is the same for every server.

Each agent starts at a random server, so a fleet's load spreads over the servers.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import httpx

from tether.core.errors import InvalidInput, Unavailable

log = logging.getLogger("tether.agent")


def server_urls(addrs: str) -> list[str]:
    """`a:8500,b:8500` or `http://a:8500` -> base URLs (order kept, duplicates dropped)."""
    urls: list[str] = []
    for part in addrs.split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        url = part if part.startswith(("http://", "https://")) else f"http://{part}"
        if url not in urls:
            urls.append(url)
    if not urls:
        raise InvalidInput("-server-addr: give at least one HOST:PORT (several separated by commas)")
    return urls


class ServerPool:
    def __init__(self, addrs: str, *, timeout: httpx.Timeout | float = 10.0) -> None:
        self.urls = server_urls(addrs)
        self.current = random.randrange(len(self.urls))
        self._clients = {u: httpx.AsyncClient(base_url=u, timeout=timeout) for u in self.urls}
        #: How many times this agent moved to another server (diagnostics and tests).
        self.failovers = 0

    @property
    def base_url(self) -> str:
        return self.urls[self.current]

    async def request(self, method: str, path: str, *, idempotent: bool = True, stream: bool = False,
                      **kwargs: Any) -> httpx.Response:
        """Send to the current server, moving on through the others (each once) when it is gone."""
        last: Exception | None = None
        for _ in range(len(self.urls)):
            url = self.base_url
            client = self._clients[url]
            try:
                return await client.send(client.build_request(method, path, **kwargs), stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc  # nothing was sent: always safe to send elsewhere
            except httpx.TransportError as exc:
                if not idempotent:
                    raise Unavailable(f"the Tether server at {url} failed during the request ({exc!r}); "
                                      "its outcome is unknown, check before repeating it") from exc
                last = exc
            self._move_on(url, last)
        raise Unavailable(f"cannot reach any Tether server ({', '.join(self.urls)}): {last!r}")

    def _move_on(self, url: str, why: Exception) -> None:
        if self.base_url != url:  # a concurrent request moved already
            return
        self.current = (self.current + 1) % len(self.urls)
        self.failovers += 1
        if len(self.urls) > 1:
            log.warning("server %s unreachable (%r); moving to %s", url, why, self.base_url)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
