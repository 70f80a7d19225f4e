"""The server's certificate authority: bootstrap, roots, configuration, rotation, signing.

`CAService` sits in the control plane (`ControlPlane.ca`) over the store. Everything it
knows lives under `ca/`:

    ca/config          public settings (CAConfig: provider, LeafCertTTL, CSRMaxPerSecond, key kind)
    ca/provider        the provider's state, private key included: it stays in the server's
                       store (the SQLite file is 0600) and no API returns it
    ca/roots/<id>      one served root (CARoot + the longest leaf TTL it ever signed with)

Every change is one compare-and-set transaction over the keys it read, so a change is
applied whole or not at all, and a refused change leaves the active CA as it was. The
in-memory view is reloaded whenever the `ca/` index moves, so a server that shares its
store with others (etcd, later) signs with whatever root is active in the store.

Rotation follows Consul (ca.rotation): the old CA cross-signs the new root, both roots
are served, and a periodic task drops the old one once it has been inactive for more
than 2x the leaf TTL (core.certwindow.root_prunable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from tether.ca import x509 as tx
from tether.ca.builtin import BuiltinCA
from tether.ca.external import ExternalCA
from tether.ca.provider import CAProvider, CARoot, provider_from_state
from tether.ca.rotation import active_root, plan_rotation
from tether.control.ca_config import EXTERNAL, CAConfig, ConfigChange, parse_config_change
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS, ROOT_KEEP_LEAF_TTLS, root_prunable
from tether.core.chain import match_chain
from tether.core.errors import Conflict, InvalidInput, RateLimited, Unavailable
from tether.core.signing_limit import FairLimiter
from tether.core.spiffe import DEFAULT_NAMESPACE, TRUST_DOMAIN_SUFFIX, service_id, validate_trust_domain
from tether.store.base import Check, Delete, Entry, Op, Put, Store, wait_present

log = logging.getLogger("tether.ca")

CA_PREFIX = "ca/"
CONFIG_KEY = "ca/config"
PROVIDER_KEY = "ca/provider"
ROOTS_PREFIX = "ca/roots/"
#: The pruning task sleeps until the next retired root is due, but at most this long ...
MAX_PRUNE_INTERVAL = 60.0
#: ... and at least this long (a root is due a hair after 2x TTL: no busy loop at the edge).
MIN_PRUNE_INTERVAL = 0.1


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class CASnapshot:
    """The CA as of one `ca/` index: what every read and every signature works from."""

    index: int
    config: CAConfig
    config_entry: Entry
    provider: CAProvider
    provider_entry: Entry
    roots: tuple[tuple[CARoot, Entry], ...]  # oldest first

    @property
    def active(self) -> CARoot:
        return active_root([r for r, _ in self.roots])


class CAService:
    def __init__(
        self,
        store: Store,
        *,
        datacenter: str,
        min_leaf_ttl: float = MIN_LEAF_TTL_SECONDS,
        clock: Callable[[], datetime] = utc_now,
        read_file: Callable[[str], str] = lambda path: Path(path).read_text(),
    ) -> None:
        self.store = store
        self.datacenter = datacenter
        self.min_leaf_ttl = min_leaf_ttl
        self.clock = clock
        self.read_file = read_file
        self.trust_domain = ""
        self._snap: CASnapshot | None = None
        self._lock = asyncio.Lock()  # one configuration change at a time on this server
        self._limit = FairLimiter(0, time.monotonic)
        self._pruner: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, cluster_id: str, *, prune: bool = True) -> None:
        """Create the built-in CA on first start, then run the root-pruning task (unless
        `prune` is False: servers sharing a store prune on the elected one, control/singleton.py)."""
        self.trust_domain = validate_trust_domain(f"{cluster_id}.{TRUST_DOMAIN_SUFFIX}")
        if self.store.get(PROVIDER_KEY) is None:
            await self._bootstrap()
            await wait_present(self.store, PROVIDER_KEY)  # another server's CA, if it won the race
        snap = self.snapshot()
        log.info("CA ready: trust domain %s, active root %s (%s)", self.trust_domain, snap.active.id,
                 snap.config.provider)
        if prune:
            self._pruner = asyncio.create_task(self.run_pruner(), name="ca-root-pruner")

    async def stop(self) -> None:
        if self._pruner:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)

    async def _bootstrap(self) -> None:
        config = CAConfig()
        ca = BuiltinCA.generate(self.trust_domain, self.clock(), config.private_key_type, config.private_key_bits)
        root = ca.active_root()
        ops: list[Op] = [Put(CONFIG_KEY, config.to_doc()), Put(PROVIDER_KEY, ca.state()),
                         Put(ROOTS_PREFIX + root.id, _root_doc(root, config.leaf_cert_ttl))]
        try:
            await self.store.commit(ops, [Check(PROVIDER_KEY, 0)])
        except Conflict:  # another server initialised it first: use theirs
            return
        log.info("CA initialised: built-in EC P-256 root %s for %s", root.id, self.trust_domain)

    # -- reads -----------------------------------------------------------------------

    def snapshot(self) -> CASnapshot:
        """The current CA, reloaded from the store only when something under `ca/` changed."""
        index = self.store.index(CA_PREFIX)
        snap = self._snap
        if snap is not None and snap.index == index:
            return snap
        config_entry, provider_entry = self.store.get(CONFIG_KEY), self.store.get(PROVIDER_KEY)
        if config_entry is None or provider_entry is None:
            raise Unavailable("the CA is not initialised yet; retry in a moment")
        entries = sorted(self.store.list(ROOTS_PREFIX), key=lambda e: (e.create_index, e.key))
        roots = tuple((CARoot.from_dict(e.value), e) for e in entries)
        config = CAConfig.from_doc(config_entry.value)
        provider = provider_from_state(provider_entry.value)
        self._snap = CASnapshot(index, config, config_entry, provider, provider_entry, roots)
        if self._limit.rate != config.csr_max_per_second:
            self._limit.set_rate(config.csr_max_per_second)
        return self._snap

    def roots_index(self) -> int:
        return self.store.index(ROOTS_PREFIX)

    async def wait_roots(self, index: int, timeout: float) -> int:
        """Block until the roots change from `index` (or `timeout`); return the roots index."""
        if index > 0:
            await self.store.wait(ROOTS_PREFIX, index, timeout)
        return self.roots_index()

    def roots_json(self) -> dict[str, Any]:
        """Consul's roots body: ActiveRootID, TrustDomain, Roots (with their store indexes)."""
        snap = self.snapshot()
        return {
            "ActiveRootID": snap.active.id,
            "TrustDomain": self.trust_domain,
            "Roots": [r.to_consul_json(create_index=e.create_index, modify_index=e.modify_index)
                      for r, e in snap.roots],
        }

    def roots_pem(self) -> str:
        return "".join(r.root_cert_pem for r, _ in self.snapshot().roots)

    def config_json(self) -> dict[str, Any]:
        """Consul's CA configuration body. Never includes a private key."""
        snap = self.snapshot()
        entry = snap.config_entry
        return {
            "Provider": snap.config.provider,
            "Config": snap.config.to_consul_json(snap.provider_entry.value),
            "State": None,
            "ForceWithoutCrossSigning": False,
            "CreateIndex": entry.create_index,
            "ModifyIndex": max(entry.modify_index, snap.provider_entry.modify_index),
        }

    # -- signing ---------------------------------------------------------------------

    async def sign(self, csr_pem: str, service: str, *, requester: str = "",
                   previous_cert_pem: str | None = None, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        """Sign a leaf CSR for `service` in this datacenter (after the caller's authorization).

        Returns the leaf with the active root's intermediates appended (what peers need),
        its validity, and the ID of the root it chains to. Raises RateLimited beyond
        CSRMaxPerSecond (shared fairly between `requester`s, renewals first: a renewal is a
        request carrying a still-valid leaf of this CA for the same service), and
        InvalidInput/PermissionDenied for a bad or foreign CSR. `namespace` is the one the
        catalog holds for `service` (the caller looks it up): the CSR must ask for exactly that.
        """
        snap = self.snapshot()
        expected = service_id(self.trust_domain, self.datacenter, service, namespace)
        renewal = previous_cert_pem is not None and self._is_own_leaf(snap, previous_cert_pem, expected)
        wait = self._limit.take(requester, renewal=renewal)
        if wait > 0:
            raise RateLimited(
                f"CSR rate limit of {snap.config.csr_max_per_second:g}/s reached "
                "(Config.CSRMaxPerSecond); retry later", retry_after=wait)
        active = snap.active
        leaf = snap.provider.sign_leaf(csr_pem, expected=expected, ttl_seconds=snap.config.leaf_cert_ttl,
                                       now=self.clock(), min_ttl_seconds=self.min_leaf_ttl)
        body = leaf.to_consul_json("", active.intermediate_certs)
        del body["PrivateKeyPEM"], body["CreateIndex"], body["ModifyIndex"]
        return {**body, "RootID": active.id}

    def _is_own_leaf(self, snap: "CASnapshot", pem: str, expected: Any) -> bool:
        """Whether `pem` is a valid leaf of ours for `expected`: what makes a request a renewal."""
        try:
            certs = tx.load_certificates_pem(pem, field="previous leaf")
            if not certs or tx.cert_spiffe_id(certs[0]) != expected:
                return False
            roots = [tx.load_certificate_pem(root.root_cert_pem) for root, _ in snap.roots]
            match_chain(certs[0], certs[1:], roots, now=self.clock())
        except InvalidInput:
            return False
        return True

    # -- configuration & rotation ----------------------------------------------------

    async def set_config(self, body: Any) -> bool:
        """Apply a PUT /v1/connect/ca/configuration body. Returns True when the root rotated."""
        async with self._lock:
            snap = self.snapshot()
            change = parse_config_change(body, snap.config, snap.provider_entry.value,
                                         min_leaf_ttl=self.min_leaf_ttl, read_file=self.read_file)
            now = self.clock()
            provider = self._new_provider(change, now) if change.rotate else snap.provider
            ops = [Put(CONFIG_KEY, change.config.to_doc())]
            ops += self._root_ops(snap, provider, change, now)
            checks = [Check(CONFIG_KEY, snap.config_entry.modify_index),
                      Check(PROVIDER_KEY, snap.provider_entry.modify_index)]
            checks += [Check(e.key, e.modify_index) for _, e in snap.roots]
            try:
                await self.store.commit(ops, checks)
            except Conflict:
                raise Conflict("the CA configuration changed while this change was prepared; "
                               "read it again and retry") from None
        rotated = provider is not snap.provider
        if rotated:
            log.info("CA root rotated: %s -> %s (%s)", snap.active.id, provider.active_root().id,
                     change.config.provider)
        return rotated

    def _new_provider(self, change: ConfigChange, now: datetime) -> CAProvider:
        """Build (and so validate) the new CA; raising here leaves everything as it was."""
        td = self.trust_domain
        if change.config.provider == EXTERNAL:
            return ExternalCA.from_pem(root_cert_pem=change.root_cert_pem or "",
                                       intermediate_cert_pem=change.intermediate_cert_pem or "",
                                       intermediate_key_pem=change.intermediate_key_pem or "",
                                       trust_domain=td, now=now)
        if change.private_key_pem and change.root_cert_pem:
            return BuiltinCA.from_root(change.private_key_pem, change.root_cert_pem, td)
        if change.private_key_pem:
            return BuiltinCA.from_private_key(change.private_key_pem, td, now)
        return BuiltinCA.generate(td, now, change.config.private_key_type, change.config.private_key_bits)

    def _root_ops(self, snap: CASnapshot, provider: CAProvider, change: ConfigChange, now: datetime) -> list[Op]:
        """Store operations for the roots (and provider state) after `change`."""
        ttl = change.config.leaf_cert_ttl
        by_id = {r.id: (r, e) for r, e in snap.roots}
        old_max = {r.id: e.value.get("max_leaf_ttl", ttl) for r, e in snap.roots}
        if provider is snap.provider:
            # No new root: remember a longer TTL on the active root, so pruning waits long enough.
            active = snap.active
            if ttl <= old_max[active.id]:
                return []
            return [Put(ROOTS_PREFIX + active.id, _root_doc(active, ttl))]
        new_root = provider.active_root()
        if new_root.id in by_id and by_id[new_root.id][0].active:
            # Same root, new intermediate (external): serve the new chain under the same root.
            return [Put(PROVIDER_KEY, provider.state()),
                    Put(ROOTS_PREFIX + new_root.id, _root_doc(new_root, max(old_max[new_root.id], ttl)))]
        roots = plan_rotation([r for r, _ in snap.roots], snap.provider, provider, now=now,
                              force_without_cross_signing=change.force_without_cross_signing)
        ops: list[Op] = [Put(PROVIDER_KEY, provider.state())]
        for root in roots:
            before = by_id.get(root.id)
            if before is None or before[0] != root:
                ops.append(Put(ROOTS_PREFIX + root.id, _root_doc(root, old_max.get(root.id, ttl))))
        return ops

    # -- pruning ---------------------------------------------------------------------

    async def prune(self) -> list[str]:
        """Drop roots inactive for more than 2x the longest leaf TTL they signed with."""
        snap = self.snapshot()
        now = self.clock()
        stale = [(r, e) for r, e in snap.roots
                 if not r.active and root_prunable(now, r.rotated_out_at, _keep_ttl(snap, e))]
        if not stale:
            return []
        try:
            await self.store.commit([Delete(e.key) for _, e in stale], [Check(e.key, e.modify_index) for _, e in stale])
        except Conflict:  # changed meanwhile; the next round looks again
            return []
        for root, _ in stale:
            log.info("CA root %s pruned: inactive since %s", root.id, root.rotated_out_at)
        return [r.id for r, _ in stale]

    def _next_prune_in(self) -> float:
        """Seconds until the earliest retired root becomes prunable (capped; a CA change wakes us sooner)."""
        snap, now = self.snapshot(), self.clock()
        due = [(r.rotated_out_at - now).total_seconds() + ROOT_KEEP_LEAF_TTLS * _keep_ttl(snap, e)
               for r, e in snap.roots if not r.active and r.rotated_out_at is not None]
        return min([MAX_PRUNE_INTERVAL, *due])

    async def run_pruner(self) -> None:
        while True:
            try:
                index = self.store.index(CA_PREFIX)
                # Sleep until the next root is due, waking early if the CA changes (a rotation).
                await self.store.wait(CA_PREFIX, index, max(MIN_PRUNE_INTERVAL, self._next_prune_in()))
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep pruning alive through a store hiccup
                log.exception("CA root pruning failed; will retry")
                await asyncio.sleep(MAX_PRUNE_INTERVAL)


def _keep_ttl(snap: CASnapshot, entry: Entry) -> float:
    """The leaf TTL a retired root is kept for: the longest it signed with, or today's if longer."""
    ttl = snap.config.leaf_cert_ttl
    return max(ttl, entry.value.get("max_leaf_ttl", ttl))


def _root_doc(root: CARoot, max_leaf_ttl: float) -> dict[str, Any]:
    return {**root.to_dict(), "max_leaf_ttl": max_leaf_ttl}

