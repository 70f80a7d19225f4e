"""SPIFFE identities: parse, format, and the names derived from them (upstream SNI).

Tether follows Consul's URI layout (agent/connect/uri*.go):

    spiffe://<trust-domain>                                   CA signing identity
    spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>     service identity

Path segments are percent-decoded on parse and percent-encoded on format, so any
value survives a round trip. Trust domains are DNS-ish and compared
case-insensitively, so they are stored lower-cased. Pure: used by the CA, the
agent, the proxy and the CLI alike.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from tether.core.errors import InvalidInput

SCHEME = "spiffe"
DEFAULT_NAMESPACE = "default"
#: Tether's trust domains are "<cluster-uuid>.tether" (Consul's are "<cluster-uuid>.consul").
TRUST_DOMAIN_SUFFIX = "tether"

# The SPIFFE spec allows lowercase letters, digits, '.', '-' and '_' in trust domains.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
# Matched against the *raw* (still percent-encoded) path, as Consul does, so an encoded
# '/' inside a segment does not split it.
_SERVICE_PATH = re.compile(r"^/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Service and datacenter names end up as labels in DNS names and SNI, so they must be labels.
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Characters Go's url.URL leaves unescaped in a path segment; escaping the rest keeps
# our output identical to Consul's for ordinary names.
_SEGMENT_SAFE = "!$&'()*+,;=:@"


class SpiffeKind(enum.Enum):
    """What a SPIFFE ID names."""

    SERVICE = "service"  # spiffe://<td>/ns/<ns>/dc/<dc>/svc/<svc>
    SIGNING = "signing"  # spiffe://<td> — carried by CA certificates


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed SPIFFE ID. For SIGNING kind, namespace/datacenter/service are empty."""

    trust_domain: str
    namespace: str = ""
    datacenter: str = ""
    service: str = ""
    kind: SpiffeKind = SpiffeKind.SERVICE

    def __post_init__(self) -> None:
        # Trust domains compare case-insensitively; storing them lower-cased makes
        # plain equality do the right thing everywhere.
        object.__setattr__(self, "trust_domain", self.trust_domain.lower())

    @property
    def uri(self) -> str:
        return format_spiffe_id(self)

    def __str__(self) -> str:
        return format_spiffe_id(self)


def signing_id(trust_domain: str) -> SpiffeId:
    """The CA signing identity `spiffe://<trust-domain>`."""
    return SpiffeId(validate_trust_domain(trust_domain), kind=SpiffeKind.SIGNING)


def service_id(trust_domain: str, datacenter: str, service: str, namespace: str = DEFAULT_NAMESPACE) -> SpiffeId:
    """The identity of `service` in `datacenter`, validating every part."""
    return SpiffeId(
        trust_domain=validate_trust_domain(trust_domain),
        namespace=_validate_label(namespace, "namespace"),
        datacenter=_validate_label(datacenter, "datacenter"),
        service=validate_service_name(service),
    )


def parse_spiffe_id(uri: str) -> SpiffeId:
    """Parse a service or signing SPIFFE ID; anything else raises InvalidInput."""
    if not isinstance(uri, str):
        raise InvalidInput(f"SPIFFE ID must be a string, got {type(uri).__name__}")
    prefix = SCHEME + "://"
    if uri[: len(prefix)].lower() != prefix:
        raise InvalidInput(f"SPIFFE ID {uri!r} must start with {prefix!r}")
    rest = uri[len(prefix) :]
    if "?" in rest or "#" in rest:
        raise InvalidInput(f"SPIFFE ID {uri!r} must not have a query or fragment")
    host, slash, path = rest.partition("/")
    path = slash + path
    trust_domain = _parse_trust_domain(host, uri)
    if path == "":
        return SpiffeId(trust_domain, kind=SpiffeKind.SIGNING)
    match = _SERVICE_PATH.match(path)
    if match is None:
        raise InvalidInput(
            f"SPIFFE ID {uri!r} is not a service identity; expected "
            f"spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>"
        )
    raw_ns, raw_dc, raw_svc = match.groups()
    ns = _unescape(raw_ns, "namespace", uri)
    dc = _unescape(raw_dc, "datacenter", uri)
    svc = _unescape(raw_svc, "service", uri)
    return SpiffeId(trust_domain, ns, dc, svc, SpiffeKind.SERVICE)


def format_spiffe_id(spiffe: SpiffeId) -> str:
    """The URI form of `spiffe` (inverse of parse_spiffe_id)."""
    head = f"{SCHEME}://{spiffe.trust_domain}"
    if spiffe.kind is SpiffeKind.SIGNING:
        return head
    ns, dc, svc = (quote(p, safe=_SEGMENT_SAFE) for p in (spiffe.namespace, spiffe.datacenter, spiffe.service))
    return f"{head}/ns/{ns}/dc/{dc}/svc/{svc}"


def match_trust_domain(signing: SpiffeId, leaf: SpiffeId) -> bool:
    """True when the CA identity `signing` may sign `leaf`: same trust domain, any case."""
    return signing.kind is SpiffeKind.SIGNING and signing.trust_domain == leaf.trust_domain


def format_upstream_sni(
    service: str, namespace: str, datacenter: str, trust_domain: str, subset: str | None = None
) -> str:
    """The SNI a proxy sends to an upstream: `[<subset>.]<svc>.<ns>.<dc>.internal.<td>`."""
    name = f"{service}.{namespace}.{datacenter}.internal.{trust_domain.lower()}"
    return f"{subset}.{name}" if subset else name


def validate_service_name(name: str) -> str:
    """Check a service name is one DNS label (it appears in SNI and DNS); return it."""
    return _validate_label(name, "service name")


def validate_namespace(namespace: str) -> str:
    """Check a namespace is one DNS label (it appears in SPIFFE IDs and SNI); return it."""
    return _validate_label(namespace, "namespace")


def validate_trust_domain(trust_domain: str) -> str:
    """Check and lower-case a trust domain such as `<cluster-uuid>.tether`."""
    td = trust_domain.lower() if isinstance(trust_domain, str) else ""
    if not _TRUST_DOMAIN.match(td) or td.startswith(".") or td.endswith(".") or ".." in td:
        raise InvalidInput(
            f"trust domain {trust_domain!r} is invalid; use lowercase letters, digits, '-', '_' "
            f"and dots, e.g. '<cluster-uuid>.{TRUST_DOMAIN_SUFFIX}'"
        )
    return td


def _validate_label(value: str, what: str) -> str:
    if not isinstance(value, str) or not _LABEL.match(value):
        raise InvalidInput(
            f"{what} {value!r} is invalid; use 1-63 letters, digits and '-', "
            "starting and ending with a letter or digit (no dots or underscores)"
        )
    return value


def _parse_trust_domain(host: str, uri: str) -> str:
    if not host:
        raise InvalidInput(f"SPIFFE ID {uri!r} has no trust domain")
    if "@" in host or ":" in host:
        raise InvalidInput(f"SPIFFE ID {uri!r} must not carry user info or a port")
    try:
        return validate_trust_domain(host)
    except InvalidInput as exc:
        raise InvalidInput(f"SPIFFE ID {uri!r}: {exc.message}") from None


def _unescape(raw: str, what: str, uri: str) -> str:
    if _BAD_ESCAPE.search(raw):
        raise InvalidInput(f"SPIFFE ID {uri!r}: {what} {raw!r} has a malformed %-escape")
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(f"SPIFFE ID {uri!r}: {what} {raw!r} does not decode to UTF-8") from None
