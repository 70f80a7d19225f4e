"""External CA from PEM files: the organisation's root, plus an intermediate Tether signs with.

The operator hands over the root certificate (no key), an intermediate certificate
(optionally followed by further intermediates up to the root) and the intermediate's
private key. Leaves are signed by the intermediate; the served root entry lists the
intermediate chain so peers can reach the root.

Everything is checked up front and every problem reported at once: PEM parses, key
types, key matches the intermediate, the intermediate is a CA, current, chains to the
root, and the root's/intermediate's name constraints permit the trust domain.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from tether.ca import x509 as tx
from tether.ca.provider import CARoot, ProviderState, SignedLeaf, cross_sign_root, issue_leaf
from tether.core.certwindow import MIN_LEAF_TTL_SECONDS
from tether.core.chain import match_chain, match_name_permitted
from tether.core.errors import InvalidInput, TetherError
from tether.core.spiffe import SpiffeId, service_id, validate_trust_domain

ROOT_NAME = "External CA Primary Cert"


class ExternalCA:
    """A CA whose root key lives elsewhere; Tether holds only an intermediate key."""

    kind = "external"

    def __init__(
        self,
        trust_domain: str,
        root: x509.Certificate,
        chain: list[x509.Certificate],
        key: tx.PrivateKey,
    ) -> None:
        # Use from_pem/from_state: they validate. This only assembles.
        self._trust_domain = validate_trust_domain(trust_domain)
        self._root = root
        self._signer = chain[0]
        self._chain = chain
        self._key = key
        self._chain_pems = tuple(tx.format_cert_pem(c) for c in chain)
        self._active = CARoot.from_cert(
            tx.format_cert_pem(root), name=ROOT_NAME, trust_domain=self._trust_domain,
            intermediate_certs=self._chain_pems,
        )

    @classmethod
    def from_pem(
        cls,
        *,
        root_cert_pem: str,
        intermediate_cert_pem: str,
        intermediate_key_pem: str,
        trust_domain: str,
        now: datetime,
    ) -> ExternalCA:
        """Load and validate the three PEM documents; InvalidInput lists every problem."""
        td = validate_trust_domain(trust_domain)
        problems: list[str] = []
        root = _collect(problems, lambda: tx.load_certificate_pem(root_cert_pem, field="RootCert"))
        chain = _collect(problems, lambda: tx.load_certificates_pem(intermediate_cert_pem, field="IntermediateCert"))
        key = _collect(problems, lambda: tx.load_private_key_pem(intermediate_key_pem, field="IntermediateKey"))
        if root is not None:
            _collect(problems, lambda: tx.key_info(root.public_key(), field="RootCert public key"))
            problems += _root_problems(root, now)
        if chain is not None:
            problems += _signer_problems(chain[0], now)
            if key is not None and chain[0].public_key() != key.public_key():
                problems.append("IntermediateKey does not match the public key of IntermediateCert")
        if root is not None and chain is not None:
            _collect(problems, lambda: match_chain(chain[0], chain[1:], [root], now=now, check_leaf_validity=False))
            problems += _trust_domain_problems([*chain, root], td)
        if problems:
            raise InvalidInput("external CA refused: " + "; ".join(dict.fromkeys(problems)))
        assert root is not None and chain is not None and key is not None
        return cls(td, root, chain, key)

    @classmethod
    def from_state(cls, state: ProviderState) -> ExternalCA:
        """Rebuild from `state()`. Time is not checked here: an expired intermediate still loads
        (so the server can start and rotate away) but `sign_leaf` refuses it."""
        if not isinstance(state, dict) or state.get("provider") != cls.kind:
            raise InvalidInput("CA state is not an external provider state (provider != 'external')")
        try:
            root = tx.load_certificate_pem(state["root_cert_pem"], field="RootCert")
            chain = tx.load_certificates_pem(state["intermediate_cert_pem"], field="IntermediateCert")
            key = tx.load_private_key_pem(state["intermediate_key_pem"], field="IntermediateKey")
            return cls(state["trust_domain"], root, chain, key)
        except KeyError as exc:
            raise InvalidInput(f"external CA state lacks {exc.args[0]!r}") from None

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    def state(self) -> ProviderState:
        """Everything needed to rebuild, the intermediate key included: store it protected, never send it."""
        return {
            "provider": self.kind,
            "trust_domain": self._trust_domain,
            "root_cert_pem": tx.format_cert_pem(self._root),
            "intermediate_cert_pem": "".join(self._chain_pems),
            "intermediate_key_pem": tx.format_private_key_pem(self._key),
        }

    def active_root(self) -> CARoot:
        return self._active

    def sign_leaf(
        self, csr_pem: str, *, expected: SpiffeId, ttl_seconds: float, now: datetime,
        min_ttl_seconds: float = MIN_LEAF_TTL_SECONDS,
    ) -> SignedLeaf:
        return issue_leaf(
            csr_pem,
            expected=expected,
            signer_key=self._key,
            signer_cert=self._signer,
            trust_domain=self._trust_domain,
            ttl_seconds=ttl_seconds,
            now=now,
            min_ttl_seconds=min_ttl_seconds,
        )

    def cross_sign(
        self, new_root_cert_pem: str, new_key_public: tx.PublicKey | None = None, *, now: datetime
    ) -> tuple[str, ...]:
        """Cross-sign with the intermediate key (we hold no root key): returns the cross-signed
        cert followed by this CA's intermediates, which a peer needs to reach the old root."""
        cert = cross_sign_root(
            new_root_cert_pem, new_key_public, signer_key=self._key, signer_cert=self._signer, now=now
        )
        return (tx.format_cert_pem(cert), *self._chain_pems)

    def __repr__(self) -> str:  # never show the key
        return f"ExternalCA(trust_domain={self._trust_domain!r}, root_id={self._active.id!r})"


def _collect(problems: list[str], load):  # type: ignore[no-untyped-def]
    try:
        return load()
    except TetherError as exc:
        problems.append(exc.message)
        return None


def _root_problems(root: x509.Certificate, now: datetime) -> list[str]:
    problems = []
    if root.subject != root.issuer:
        problems.append("RootCert is not self-signed (issuer differs from subject); give the top of the chain")
    if not _is_ca(root):
        problems.append("RootCert is not a CA (basicConstraints CA:TRUE missing)")
    if now > root.not_valid_after_utc:
        problems.append(f"RootCert expired at {root.not_valid_after_utc.isoformat()}")
    return problems


def _signer_problems(signer: x509.Certificate, now: datetime) -> list[str]:
    problems = []
    if not _is_ca(signer):
        problems.append("IntermediateCert is not a CA (basicConstraints CA:TRUE missing)")
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            problems.append("IntermediateCert may not sign certificates (keyUsage lacks keyCertSign)")
    except x509.ExtensionNotFound:
        pass
    if now > signer.not_valid_after_utc:
        problems.append(
            f"IntermediateCert expired at {signer.not_valid_after_utc.isoformat()}; issue a new intermediate"
        )
    elif now < signer.not_valid_before_utc:
        problems.append(f"IntermediateCert is not valid before {signer.not_valid_before_utc.isoformat()}")
    return problems


def _trust_domain_problems(certs: list[x509.Certificate], trust_domain: str) -> list[str]:
    """Would leaves of this trust domain pass the chain's name constraints? Checked with a sample ID."""
    sample = service_id(trust_domain, "dc1", "probe").uri
    problems = []
    for cert in certs:
        try:
            constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        if not match_name_permitted(constraints, "URI", sample):
            problems.append(
                f"name constraints of {cert.subject.rfc4514_string()!r} do not permit "
                f"URIs in trust domain {trust_domain!r}"
            )
    return problems


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
