"""Root rotation planning over CARoot lists (Consul's cross-signing scheme).

    plan_rotation(roots, old_provider, new_provider, now=...) -> new roots list
    prune_roots(roots, now=..., leaf_ttl_seconds=...)        -> roots minus expired-out ones

Rotation: the old provider cross-signs the new root (a cert with the new root's
subject and key, issued by the old root); the new root becomes active and carries
that cert in `intermediate_certs`, which is sent along with every new leaf; the old
root stays in the served list, inactive. So during the overlap:
  - a peer that still trusts only the old root accepts new leaves (via the cross-signed cert);
  - a peer that has the new roots list (both roots) accepts old leaves.
The old root is dropped once inactive for more than 2x the leaf TTL (core.certwindow).

Pure apart from the providers' signing (including one throwaway probe leaf that
proves the new chain reaches the old root): nothing is written; the caller stores the
result (compare-and-set on its roots key) together with the new provider's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from tether.ca import x509 as tx
from tether.ca.provider import CAProvider, CARoot
from tether.core.certwindow import root_prunable
from tether.core.chain import match_chain
from tether.core.errors import Conflict, InvalidInput, NotFound
from tether.core.spiffe import service_id


def active_root(roots: Sequence[CARoot]) -> CARoot:
    """The single active root; NotFound when there is none, Conflict when there are several."""
    active = [r for r in roots if r.active]
    if not active:
        raise NotFound("no active CA root; the CA has not been initialised")
    if len(active) > 1:
        raise Conflict(f"{len(active)} CA roots are marked active ({', '.join(r.id for r in active)}); expected one")
    return active[0]


def plan_rotation(
    roots: Sequence[CARoot],
    old_provider: CAProvider | None,
    new_provider: CAProvider,
    *,
    now: datetime,
    force_without_cross_signing: bool = False,
) -> tuple[CARoot, ...]:
    """The roots list after making `new_provider`'s root the active one.

    With no current roots this is the bootstrap: just the new root. Rotating to the
    root that is already active changes nothing (Consul no-ops too).
    """
    new_root = new_provider.active_root()
    if not roots:
        return (new_root,)
    current = active_root(roots)
    if new_root.id == current.id:
        return tuple(roots)
    if new_root.trust_domain != current.trust_domain:
        raise InvalidInput(
            f"new CA trust domain {new_root.trust_domain!r} differs from the cluster's {current.trust_domain!r}"
        )
    cross = _cross_sign(current, old_provider, new_root, now, force_without_cross_signing)
    promoted = replace(
        new_root,
        intermediate_certs=new_root.intermediate_certs + cross,
        active=True,
        rotated_out_at=None,
    )
    if cross:
        _check_old_peers_accept(promoted, current, new_provider, now)
    kept = [_retire(r, now) for r in roots if r.id != new_root.id]
    return (*kept, promoted)


def prune_roots(roots: Sequence[CARoot], *, now: datetime, leaf_ttl_seconds: float) -> tuple[CARoot, ...]:
    """Drop inactive roots that have been out of service for more than 2x the leaf TTL."""
    return tuple(r for r in roots if r.active or not root_prunable(now, r.rotated_out_at, leaf_ttl_seconds))


def _cross_sign(
    current: CARoot,
    old_provider: CAProvider | None,
    new_root: CARoot,
    now: datetime,
    force: bool,
) -> tuple[str, ...]:
    """The cross-signed cert (plus any chain the old signer needs), or () when forced without."""
    why: str
    if old_provider is None:
        why = "the old CA provider is not available"
    elif old_provider.active_root().id != current.id:
        raise Conflict(
            f"old provider holds root {old_provider.active_root().id}, but the active root is {current.id}; "
            "reload the CA state and retry"
        )
    else:
        try:
            return old_provider.cross_sign(new_root.root_cert_pem, now=now)
        except InvalidInput as exc:
            why = exc.message
    if force:
        # The operator accepted a window in which peers with only the old root reject new leaves.
        return ()
    raise InvalidInput(
        f"cannot cross-sign the new root with the old one ({why}); fix that, or set "
        "ForceWithoutCrossSigning to accept failed handshakes until every peer has the new root"
    )


def _check_old_peers_accept(promoted: CARoot, current: CARoot, new_provider: CAProvider, now: datetime) -> None:
    """Sign a throwaway probe leaf with the new CA and make sure it chains to the old root.

    Catches what the cross-signed cert alone cannot show, e.g. an external intermediate
    whose pathLen leaves no room for the new chain, before any peer sees the new root.
    """
    probe = service_id(promoted.trust_domain, "dc1", "rotation-probe")
    key = tx.generate_private_key()
    leaf = new_provider.sign_leaf(tx.make_leaf_csr(probe, key), expected=probe, ttl_seconds=3600, now=now)
    chain = [tx.load_certificate_pem(p) for p in promoted.intermediate_certs]
    try:
        match_chain(
            tx.load_certificate_pem(leaf.cert_pem), chain, [tx.load_certificate_pem(current.root_cert_pem)], now=now
        )
    except InvalidInput as exc:
        raise InvalidInput(
            f"after rotation, peers trusting only the current root would refuse new leaves: {exc.message}"
        ) from None


def _retire(root: CARoot, now: datetime) -> CARoot:
    if not root.active:
        return root
    return replace(root, active=False, rotated_out_at=now)
