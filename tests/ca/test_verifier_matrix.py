"""The interop matrix: every Tether chain accepted by four verifiers, every foreign leaf refused.

Chains come from the built-in CA (EC and RSA roots), the external provider (leaves signed
by the organisation's intermediate), and across root rotations (cross-signed: built-in to
built-in, and external to built-in). The verifiers are OpenSSL (Python's ssl),
`cryptography.x509.verification`, Go's crypto/x509 and Node's `tls` (verifier_kit.py).
Each case also names what a peer trusts, as it would during a rotation's overlap.

Refusals must say "unknown issuer" in the verifier's own words, so a case cannot pass by
being refused for an unrelated reason (a parse error, a policy this test did not mean).
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import verifier_kit as vk
from ca_testkit import NOW, issue, make_external_pki
from verifier_kit import MatrixCase

from tether.ca import x509 as tx
from tether.ca.builtin import BuiltinCA
from tether.ca.external import ExternalCA
from tether.ca.rotation import plan_rotation
from tether.core.spiffe import service_id
from tether.testing.deps import missing

#: How each verifier says "no path from this leaf to a root I trust" (an attacker's own root
#: sent along as an intermediate makes OpenSSL say "self-signed certificate in chain").
UNKNOWN_ISSUER = {
    "openssl": r"unable to get local issuer certificate|self-signed certificate in certificate chain",
    "pyca": r"candidates exhausted",
    "go": r"certificate signed by unknown authority",
    "node": r"UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN",
}
VERIFIERS = tuple(UNKNOWN_ISSUER)


def _external(td: str) -> ExternalCA:
    pki = make_external_pki()
    return ExternalCA.from_pem(
        root_cert_pem=pki.root_pem, intermediate_cert_pem=pki.intermediate_pem,
        intermediate_key_pem=pki.intermediate_key_pem, trust_domain=td, now=NOW,
    )


def build_cases() -> list[MatrixCase]:
    td = f"{uuid.uuid4()}.tether"
    web, db = service_id(td, "dc1", "web"), service_id(td, "dc1", "db")
    cases: list[MatrixCase] = []

    def case(name, presents, trusts, accept=True):
        cases.append(MatrixCase(name, presents, tuple(trusts), accept))

    builtin = BuiltinCA.generate(td, NOW)
    root = builtin.active_root().root_cert_pem
    case("builtin", issue(builtin, web), [root])
    rsa = BuiltinCA.from_private_key(tx.format_private_key_pem(tx.generate_private_key("rsa", 2048)), td, NOW)
    case("builtin-rsa", issue(rsa, web), [rsa.active_root().root_cert_pem])

    ext = _external(td)
    ext_root = ext.active_root()
    case("external", issue(ext, web, intermediates=ext_root.intermediate_certs), [ext_root.root_cert_pem])

    # Built-in -> built-in: the new root is cross-signed by the old one.
    new = BuiltinCA.generate(td, NOW)
    old_entry, new_entry = plan_rotation([builtin.active_root()], builtin, new, now=NOW)
    new_leaf = issue(new, db, intermediates=new_entry.intermediate_certs)
    both = [old_entry.root_cert_pem, new_entry.root_cert_pem]
    case("rotated-new-leaf-old-root-peer", new_leaf, [old_entry.root_cert_pem])
    case("rotated-new-leaf-new-root-peer", new_leaf, [new_entry.root_cert_pem])
    case("rotated-old-leaf-both-roots-peer", issue(builtin, web), both)

    # External -> built-in: the external intermediate cross-signs; the chain is four long.
    back = BuiltinCA.generate(td, NOW)
    back_entry = plan_rotation([ext_root], ext, back, now=NOW)[-1]
    case("rotated-external-to-builtin", issue(back, web, intermediates=back_entry.intermediate_certs),
         [ext_root.root_cert_pem])

    # Refusals: a leaf of the same trust domain and service name from a CA nobody trusts,
    # alone, or sent with its own root as if that were an intermediate.
    stranger = BuiltinCA.generate(td, NOW)
    foreign = issue(stranger, web)
    case("foreign-vs-builtin", foreign, [root], accept=False)
    case("foreign-vs-external", foreign, [ext_root.root_cert_pem], accept=False)
    case("foreign-vs-rotation-roots", foreign, both, accept=False)
    case("foreign-with-its-root-attached", issue(stranger, web, intermediates=[stranger.active_root().root_cert_pem]),
         [root], accept=False)
    # And chains that are ours but incomplete: the peer cannot reach its root without them.
    case("external-without-intermediate", issue(ext, web), [ext_root.root_cert_pem], accept=False)
    case("rotated-without-cross-signed", issue(new, db), [old_entry.root_cert_pem], accept=False)
    return cases


CASES = build_cases()


@pytest.fixture(scope="session")
def go_verifier(tmp_path_factory) -> Path:
    """verify_chains.go compiled once per session, caches under the session's tmp."""
    if shutil.which("go") is None:
        pytest.skip(missing("go"))
    return vk.build_go(tmp_path_factory.mktemp("go-verifier"))


@pytest.fixture(scope="module")
def verdicts(request) -> Callable[[str], vk.Verdicts]:
    """verifier name -> its verdicts on CASES; each verifier runs once, on first use."""
    cache: dict[str, vk.Verdicts] = {}

    def get(verifier: str) -> vk.Verdicts:
        if verifier not in cache:
            if verifier == "go":
                cache[verifier] = vk.go(request.getfixturevalue("go_verifier"), CASES)
            elif verifier == "node":
                if shutil.which("node") is None:
                    pytest.skip(missing("node"))
                cache[verifier] = vk.node(CASES)
            else:
                cache[verifier] = {"openssl": vk.openssl, "pyca": vk.pyca}[verifier](CASES)
        return cache[verifier]

    return get


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("verifier", VERIFIERS)
def test_verifier_matrix(verdicts, verifier: str, case: MatrixCase):
    error = verdicts(verifier)[case.name]
    if case.accept:
        assert error is None, f"{verifier} refused {case.name}: {error}"
    else:
        assert error is not None, f"{verifier} accepted {case.name}"
        assert re.search(UNKNOWN_ISSUER[verifier], error, re.IGNORECASE), f"{verifier}: {error}"
