"""The agent's certificate cache: CA roots and one leaf per service, renewed ahead of need.

For each service asked for, the agent makes an EC P-256 key itself, sends only a CSR to
the server (`ServerLink.sign`), and keeps the signed leaf and its key in memory (never on
disk). Later requests are answered from memory. A background task per leaf renews it at
a random point between 60% and 90% of its lifetime (core.certwindow.renewal_point), so
leaves issued together do not all come back together, and nobody waits for a signature.
A leaf nobody asked for in IDLE_TTL is dropped at its next renewal instead.

A second task watches the roots with a blocking query; when the active root changes
(rotation), every leaf signed under another root is re-issued at once. Blocked HTTP
clients wake when their leaf or the roots change (`wait_leaf`, `wait_roots`).

Fail static: when the server cannot be reached, the cached leaf is served until it
expires and renewal keeps retrying with backoff (core.certwindow.retry_delay, which also
follows a server's Retry-After); the failure is logged, not the key.

Leaf indexes (CreateIndex/ModifyIndex, X-Consul-Index of the leaf endpoint) come from an
agent-wide counter seeded with the wall clock in milliseconds, so they grow with every
issue and keep growing across agent restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from tether.agent.link import ServerLink
from tether.ca import x509 as tx
from tether.core.certwindow import is_expired, renewal_point, retry_delay
from tether.core.errors import RateLimited, TetherError
from tether.core.spiffe import DEFAULT_NAMESPACE, parse_spiffe_id, service_id

log = logging.getLogger("tether.agent.leaves")

#: How long one blocking roots query waits on the server (Consul's default wait).
ROOTS_WAIT = 300.0
#: Pause between roots queries, so a server answering at once cannot make a busy loop.
ROOTS_MIN_INTERVAL = 0.05
#: A leaf nobody asked for in this long is dropped at its next renewal (Consul's cache does the same).
IDLE_TTL = 3 * 24 * 3600.0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class CachedLeaf:
    """A signed leaf with its key, and the answer of the leaf endpoint, encoded once."""

    service: str
    cert_pem: str  # the leaf followed by the intermediates peers need
    key_pem: str
    serial: str
    service_uri: str
    valid_after: datetime
    valid_before: datetime
    root_id: str  # the active root when it was signed
    renew_at: datetime
    index: int
    body: bytes  # Consul's JSON for /v1/agent/connect/ca/leaf/:service

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.body)


class LeafCache:
    def __init__(
        self,
        link: ServerLink,
        *,
        datacenter: str,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = utc_now,
        pause: Callable[[asyncio.Event, float], Awaitable[None]] | None = None,
        roots_wait: float = ROOTS_WAIT,
        namespace_of: Callable[[str], str] = lambda _service: DEFAULT_NAMESPACE,
    ) -> None:
        """`rng` (draws in [0, 1)), `clock` (aware datetimes) and `pause` (wait for an event at
        most so many seconds) are what renewal timing depends on; tests pass their own."""
        self.link = link
        self.datacenter = datacenter
        self.namespace_of = namespace_of  # a local service's namespace: the CA signs only the catalog's
        self.rng = rng
        self.clock = clock
        self.pause = pause or _wait
        self.roots_wait = roots_wait
        self._leaves: dict[str, CachedLeaf] = {}
        self._last_used: dict[str, datetime] = {}
        # The token of the latest caller the agent authorized for each service's leaf: signing
        # (and every renewal) is done with it, so the server checks service:write too.
        self._tokens: dict[str, str | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed: dict[str, asyncio.Event] = {}  # set (and replaced) when a service's leaf changes
        self._reissue: dict[str, asyncio.Event] = {}  # set to make a renewer act now
        self._renewers: dict[str, asyncio.Task[None]] = {}
        self._roots: dict[str, Any] | None = None
        self._roots_index = 0
        self._roots_changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._last_index = int(time.time() * 1000)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the roots once (best effort) and start watching them."""
        try:
            self._set_roots(*await self.link.roots(0, 0))
        except TetherError as exc:
            log.warning("CA roots not available yet (will keep trying): %s", exc)
        self._watcher = asyncio.create_task(self._watch_roots(), name="leafcache-roots")

    async def stop(self) -> None:
        tasks = [t for t in [self._watcher, *self._renewers.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._renewers.clear()

    # -- roots -----------------------------------------------------------------------

    @property
    def active_root_id(self) -> str | None:
        return self._roots["ActiveRootID"] if self._roots else None

    async def roots(self) -> tuple[dict[str, Any], int]:
        """The cached roots and their index (fetched now if the watcher has none yet)."""
        if self._roots is None:
            self._set_roots(*await self.link.roots(0, 0))
        assert self._roots is not None
        return self._roots, self._roots_index

    async def wait_roots(self, index: int, timeout: float) -> tuple[dict[str, Any], int]:
        """Blocking read: returns once the roots index differs from `index`, or at `timeout`."""
        doc, current = await self.roots()
        if index <= 0 or index != current:
            return doc, current
        event = self._roots_changed
        await _wait(event, timeout)
        return await self.roots()

    def _set_roots(self, doc: dict[str, Any], index: int) -> None:
        previous = self.active_root_id
        self._roots, self._roots_index = doc, index
        event, self._roots_changed = self._roots_changed, asyncio.Event()
        event.set()
        active = doc.get("ActiveRootID")
        if previous is not None and active != previous:
            log.info("CA active root changed %s -> %s; re-issuing %d leaf certificate(s)",
                     previous, active, sum(1 for leaf in self._leaves.values() if leaf.root_id != active))
        for service, leaf in self._leaves.items():
            if leaf.root_id != active:
                self._reissue.setdefault(service, asyncio.Event()).set()

    async def _watch_roots(self) -> None:
        failures = 0
        while True:
            try:
                doc, index = await self.link.roots(self._roots_index if self._roots else 0, self.roots_wait)
                failures = 0
                if index != self._roots_index or doc != self._roots:
                    self._set_roots(doc, index)  # also when the index went backwards: the server was reset
                await asyncio.sleep(ROOTS_MIN_INTERVAL)
            except asyncio.CancelledError:
                raise
            except TetherError as exc:
                failures += 1
                delay = self._retry_delay(failures, exc)
                log.warning("watching CA roots failed (serving the cached roots, retry in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)

    # -- leaves ----------------------------------------------------------------------

    def cached(self, service: str) -> CachedLeaf | None:
        """The leaf in memory, whatever its state (no I/O)."""
        return self._leaves.get(service)

    async def leaf(self, service: str, token: str | None = None) -> CachedLeaf:
        """The current leaf for `service`: from memory when usable, else signed now with `token`
        (the caller's, already checked for service:write by the agent's route)."""
        self._last_used[service] = self.clock()
        self._tokens[service] = token
        entry = self._leaves.get(service)
        if entry is not None and self._usable(entry):
            return entry
        return await self._refresh(service, force=False)

    async def wait_leaf(self, service: str, index: int, timeout: float, token: str | None = None) -> CachedLeaf:
        """Blocking read: returns once the leaf's index differs from `index`, or at `timeout`."""
        entry = await self.leaf(service, token)
        if index <= 0 or entry.index != index:
            return entry
        await _wait(self._changed.setdefault(service, asyncio.Event()), timeout)
        return await self.leaf(service, token)

    def _usable(self, entry: CachedLeaf) -> bool:
        active = self.active_root_id
        # A service registered again in another namespace needs a leaf naming that namespace.
        same_namespace = parse_spiffe_id(entry.service_uri).namespace == self.namespace_of(entry.service)
        return (not is_expired(self.clock(), entry.valid_before) and (active is None or entry.root_id == active)
                and same_namespace)

    async def _refresh(self, service: str, *, force: bool) -> CachedLeaf:
        """Sign a new leaf (one at a time per service).

        A request (force=False) falls back to a still-valid cached leaf when signing fails
        (fail static); the renewer (force=True) gets the error, to retry with backoff.
        """
        async with self._locks.setdefault(service, asyncio.Lock()):
            entry = self._leaves.get(service)
            if not force and entry is not None and self._usable(entry):
                return entry  # someone else renewed it while we waited for the lock
            try:
                fresh = await self._issue(service, previous=entry)
            except TetherError as exc:
                if force or entry is None or is_expired(self.clock(), entry.valid_before):
                    raise
                log.warning("leaf for %s: cannot get a new certificate (%s); serving the cached one, "
                            "valid until %s", service, exc, entry.valid_before.isoformat())
                return entry
            self._leaves[service] = fresh
            self._notify(service)
            if service not in self._renewers or self._renewers[service].done():
                self._renewers[service] = asyncio.create_task(self._renew_loop(service), name=f"leaf-{service}")
            return fresh

    async def _issue(self, service: str, previous: CachedLeaf | None = None) -> CachedLeaf:
        roots, _ = await self.roots()
        spiffe = service_id(roots["TrustDomain"], self.datacenter, service, self.namespace_of(service))
        key = tx.generate_private_key()  # EC P-256; it never leaves this process
        requested_at = self.clock()
        renewing = previous.cert_pem if previous is not None and not is_expired(requested_at, previous.valid_before) \
            else None
        signed = await self.link.sign(tx.make_leaf_csr(spiffe, key), service, self._tokens.get(service), renewing)
        valid_after = datetime.fromisoformat(signed["ValidAfter"])
        valid_before = datetime.fromisoformat(signed["ValidBefore"])
        # Leaves are backdated a minute for clock skew; the renewal window starts when we
        # asked, or a seconds-long leaf would be "due" the moment it arrived.
        start = requested_at if valid_after < requested_at < valid_before else valid_after
        index = self._last_index = max(self._last_index + 1, int(time.time() * 1000))
        key_pem = tx.format_private_key_pem(key)
        body = {
            "SerialNumber": signed["SerialNumber"], "CertPEM": signed["CertPEM"], "PrivateKeyPEM": key_pem,
            "Service": service, "ServiceURI": signed["ServiceURI"], "ValidAfter": signed["ValidAfter"],
            "ValidBefore": signed["ValidBefore"], "CreateIndex": index, "ModifyIndex": index,
        }
        return CachedLeaf(
            service=service, cert_pem=signed["CertPEM"], key_pem=key_pem, serial=signed["SerialNumber"],
            service_uri=signed["ServiceURI"], valid_after=valid_after, valid_before=valid_before,
            root_id=signed.get("RootID", ""), renew_at=renewal_point(start, valid_before, self.rng()),
            index=index, body=json.dumps(body, separators=(",", ":")).encode(),
        )

    def _retry_delay(self, failures: int, exc: BaseException | None, remaining: float = 0.0) -> float:
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        return retry_delay(failures, remaining, retry_after=retry_after, u=self.rng())

    def _notify(self, service: str) -> None:
        event = self._changed.pop(service, None)
        if event is not None:
            event.set()

    async def _renew_loop(self, service: str) -> None:
        """Renew `service`'s leaf at its renewal point, or at once when the roots changed."""
        failures, error = 0, None
        trigger = self._reissue.setdefault(service, asyncio.Event())
        while True:
            entry = self._leaves[service]
            if not failures:
                delay = (entry.renew_at - self.clock()).total_seconds()
            else:
                delay = self._retry_delay(failures, error, (entry.valid_before - self.clock()).total_seconds())
            await self.pause(trigger, delay)
            trigger.clear()
            last_used = self._last_used.get(service)
            if last_used is None or (self.clock() - last_used).total_seconds() > IDLE_TTL:
                log.info("leaf for %s unused for %.0fh; dropping it", service, IDLE_TTL / 3600)
                self._leaves.pop(service, None)
                self._renewers.pop(service, None)
                self._tokens.pop(service, None)
                return
            try:
                await self._refresh(service, force=True)
                failures, error = 0, None
            except TetherError as exc:
                failures, error = failures + 1, exc
                current = self._leaves[service]
                if is_expired(self.clock(), current.valid_before):
                    state = "it has EXPIRED: requests fail until a renewal succeeds"
                else:
                    state = f"serving the cached one, valid until {current.valid_before.isoformat()}"
                log.warning("leaf for %s: renewal failed (%s); %s", service, exc, state)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait for `event` at most `timeout` seconds (no error on timeout)."""
    if timeout <= 0:
        return
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass

