"""Certificate path building over `cryptography` objects, with reasons when it fails.

`match_chain(leaf, intermediates, roots, now=...)` returns the path leaf -> ... -> root
or raises InvalidInput saying why no path works (expired, wrong issuer, bad signature,
not a CA, path length, name constraints). It backs `tether ca inspect`, the external-CA
checks and the tests. It is not the proxy's verifier: the proxy leaves that to OpenSSL,
and the tests check that both agree on Tether's chains.

Name constraints are checked for URI and DNS names only (Tether's root constrains DNS;
an organisation's external chain may constrain URIs too), with OpenSSL's rules: a URI constraint matches the URI's host exactly, or
any subdomain when it starts with '.'; a DNS constraint matches the name and its
subdomains. Pure: no clocks (now is passed), no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from tether.core.errors import InvalidInput

#: Longest path tried (leaf + intermediates + root); real meshes use 2-4.
MAX_PATH_LENGTH = 8


def match_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    check_leaf_validity: bool = True,
) -> tuple[x509.Certificate, ...]:
    """The path from `leaf` to one of `roots` (both ends included), or InvalidInput with why not.

    `check_leaf_validity=False` skips only the leaf's own dates, for callers that
    report those separately (e.g. checking an intermediate's path to its root).
    """
    if now.tzinfo is None:
        raise InvalidInput("now must be a timezone-aware datetime")
    problem = _time_problem(leaf, now) if check_leaf_validity else None
    if problem:
        raise InvalidInput(f"leaf {describe(leaf)}: {problem}")
    if not roots:
        raise InvalidInput("no trusted roots given; pass the CA roots to verify against")
    reasons: list[str] = []
    path = _search((leaf,), list(intermediates), list(roots), now, reasons)
    if path is None:
        detail = "; ".join(dict.fromkeys(reasons)) or "no candidate issuers"
        raise InvalidInput(f"no valid path from {describe(leaf)} to a trusted root: {detail}")
    return path


def _search(
    path: tuple[x509.Certificate, ...],
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime,
    reasons: list[str],
) -> tuple[x509.Certificate, ...] | None:
    """Depth-first: try trusted roots first (shortest path), then intermediates."""
    child = path[-1]
    if len(path) >= MAX_PATH_LENGTH:
        reasons.append(f"path longer than {MAX_PATH_LENGTH} certificates")
        return None
    named = False
    for issuer in roots:
        if issuer.subject != child.issuer:
            continue
        named = True
        problem = _issuer_problem(child, issuer, path, now)
        full = path + (issuer,)
        problem = problem or match_name_constraints(full)
        if problem is None:
            return full
        reasons.append(problem)
    for issuer in intermediates:
        if issuer.subject != child.issuer or issuer in path:
            continue
        named = True
        problem = _issuer_problem(child, issuer, path, now)
        if problem is not None:
            reasons.append(problem)
            continue
        found = _search(path + (issuer,), intermediates, roots, now, reasons)
        if found is not None:
            return found
    if not named:
        reasons.append(
            f"issuer {child.issuer.rfc4514_string()!r} of {describe(child)} is not among "
            f"the {len(intermediates)} intermediate(s) or {len(roots)} root(s)"
        )
    return None


def _issuer_problem(
    child: x509.Certificate, issuer: x509.Certificate, path: tuple[x509.Certificate, ...], now: datetime
) -> str | None:
    """Why `issuer` cannot sign `child` at this point of the path, or None."""
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return f"signature on {describe(child)} does not verify with the key of {describe(issuer)}"
    problem = _time_problem(issuer, now)
    if problem:
        return f"{describe(issuer)}: {problem}"
    constraints = _extension(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        return f"{describe(issuer)} is not a CA (basicConstraints CA:TRUE missing)"
    usage = _extension(issuer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        return f"{describe(issuer)} may not sign certificates (keyUsage lacks keyCertSign)"
    # Intermediates between this issuer and the leaf, not counting self-issued ones (RFC 5280 6.1.4).
    below = sum(1 for c in path[1:] if c.subject != c.issuer)
    if constraints.path_length is not None and below > constraints.path_length:
        return f"{describe(issuer)} allows {constraints.path_length} intermediate(s) below it, path has {below}"
    return None


def match_name_constraints(path: Sequence[x509.Certificate]) -> str | None:
    """Check every CA's name constraints against the certificates below it; the first violation or None."""
    for index in range(1, len(path)):
        constraints = _extension(path[index], x509.NameConstraints)
        if constraints is None:
            continue
        for depth, cert in enumerate(path[:index]):
            if depth > 0 and cert.subject == cert.issuer:
                continue  # self-issued intermediates are exempt (RFC 5280 4.2.1.10)
            for kind, name in _constrained_names(cert, is_leaf=depth == 0):
                if not match_name_permitted(constraints, kind, name):
                    return (
                        f"{kind} name {name!r} of {describe(cert)} violates the name constraints "
                        f"of {describe(path[index])}"
                    )
    return None


def _constrained_names(cert: x509.Certificate, *, is_leaf: bool) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is not None:
        names += [("URI", uri) for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names += [("DNS", dns) for dns in san.get_values_for_type(x509.DNSName)]
    if is_leaf and not any(kind == "DNS" for kind, _ in names):
        # OpenSSL also checks a hostname-looking CN against DNS constraints when there is no DNS SAN.
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = str(attr.value)
            if "." in value and " " not in value:
                names.append(("DNS", value))
    return names


def match_name_permitted(constraints: x509.NameConstraints, kind: str, name: str) -> bool:
    """True when the "URI" or "DNS" `name` is allowed by `constraints`."""
    gtype = x509.UniformResourceIdentifier if kind == "URI" else x509.DNSName
    host = _uri_host(name) if kind == "URI" else name.lower().rstrip(".")
    matcher = _uri_match if kind == "URI" else _dns_match
    permitted = [str(c.value) for c in constraints.permitted_subtrees or () if isinstance(c, gtype)]
    excluded = [str(c.value) for c in constraints.excluded_subtrees or () if isinstance(c, gtype)]
    if host is None:
        return not permitted and not excluded
    if permitted and not any(matcher(host, c) for c in permitted):
        return False
    return not any(matcher(host, c) for c in excluded)


def _uri_host(uri: str) -> str | None:
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    return host.lower() if host else None


def _uri_match(host: str, constraint: str) -> bool:
    constraint = constraint.lower()
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _dns_match(host: str, constraint: str) -> bool:
    constraint = constraint.lower().rstrip(".")
    if not constraint:
        return True
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint or host.endswith("." + constraint)


def _time_problem(cert: x509.Certificate, now: datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc.isoformat()}"
    if now > cert.not_valid_after_utc:
        return f"expired at {cert.not_valid_after_utc.isoformat()}"
    return None


def _extension(cert: x509.Certificate, ext_type: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None


def describe(cert: x509.Certificate) -> str:
    """A short human name for messages: the subject, plus the first URI SAN if any."""
    subject = cert.subject.rfc4514_string()
    san = _extension(cert, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    if not subject:
        return f"'{uris[0]}'" if uris else "'<empty subject>'"
    return f"'{subject}' ({uris[0]})" if uris else f"'{subject}'"
