"""Health-check runners: TCP, HTTP and TTL checks, run by the agent for its own services.

Each runner is one asyncio task that reports `(status, output)` through a callback; the
agent writes a status to the catalog only when it changes. Alias checks have no runner:
the agent recomputes them whenever a check of the aliased service changes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Awaitable, Callable

import httpx

from tether.core.duration import parse_duration
from tether.core.health import CRITICAL, PASSING, WARNING

log = logging.getLogger("tether.agent.checks")

Report = Callable[[str, str, str], Awaitable[None]]  # (check_id, status, output)

DEFAULT_TIMEOUT = 10.0  # Consul's default check timeout
OUTPUT_LIMIT = 4096  # Consul truncates check output to 4 KiB too


def _split_host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def probe_tcp(target: str, timeout: float) -> tuple[str, str]:
    try:
        host, port = _split_host_port(target)
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, ValueError, asyncio.TimeoutError) as exc:
        return CRITICAL, f"TCP connect {target}: {exc or 'timed out'}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return PASSING, f"TCP connect {target}: Success"


async def probe_http(client: httpx.AsyncClient, definition: dict[str, Any], timeout: float) -> tuple[str, str]:
    url = definition["HTTP"]
    method = definition.get("Method") or "GET"
    headers = [(k, v) for k, values in (definition.get("Header") or {}).items() for v in values]
    try:
        response = await client.request(method, url, headers=headers, content=definition.get("Body") or None,
                                        timeout=timeout)
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        return CRITICAL, f"HTTP {method} {url}: {type(exc).__name__}: {exc}"
    body = response.text[:OUTPUT_LIMIT]
    line = f"HTTP {method} {url}: {response.status_code} {response.reason_phrase} Output: {body}"
    # Consul: 2xx passing, 429 warning, anything else critical.
    if 200 <= response.status_code < 300:
        return PASSING, line
    if response.status_code == 429:
        return WARNING, line
    return CRITICAL, line


class PollingCheck:
    """A TCP or HTTP check run every Interval."""

    def __init__(self, check: dict[str, Any], report: Report, http_client: httpx.AsyncClient) -> None:
        self.check_id = check["CheckID"]
        self.definition = check["Definition"]
        self.interval = parse_duration(self.definition["Interval"])
        self.timeout = parse_duration(self.definition["Timeout"]) if self.definition.get("Timeout") else DEFAULT_TIMEOUT
        self.report = report
        self.http = http_client
        self.task = asyncio.create_task(self._run(), name=f"check {self.check_id}")

    async def _run(self) -> None:
        while True:
            if self.definition.get("TCP"):
                status, output = await probe_tcp(self.definition["TCP"], self.timeout)
            else:
                status, output = await probe_http(self.http, self.definition, self.timeout)
            try:
                await self.report(self.check_id, status, output)
            except Exception:  # the server is unreachable: keep probing, report next round
                log.warning("check %s: could not report %s", self.check_id, status, exc_info=True)
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self.task.cancel()


class TTLCheck:
    """Critical unless refreshed (pass/warn/fail) within TTL."""

    def __init__(self, check: dict[str, Any], report: Report) -> None:
        self.check_id = check["CheckID"]
        self.ttl = parse_duration(check["Definition"]["TTL"])
        self.report = report
        self._timer: asyncio.TimerHandle | None = None
        self.arm()

    def arm(self) -> None:
        """(Re)start the countdown; called on every update."""
        if self._timer:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.ttl, lambda: loop.create_task(self._expire()))

    async def _expire(self) -> None:
        try:
            await self.report(self.check_id, CRITICAL, f"TTL expired (no update within {self.ttl:g}s)")
        except Exception:
            log.warning("check %s: could not report TTL expiry", self.check_id, exc_info=True)

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
