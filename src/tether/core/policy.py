"""Server policy: Linkerd-style default policies and explicit authorizations, as values.

Where intentions (core/intentions.py) say which *service* may call which, server
policy says which *kind of caller* a service port accepts at all, in Linkerd's terms:

    all-unauthenticated      anyone (Linkerd's install default)
    all-authenticated        callers with a verified identity, any trust domain
    cluster-authenticated    callers with an identity in this mesh's trust domain
    cluster-unauthenticated  those, plus any caller from the mesh's cluster networks
    deny                     nobody, unless an authorization grants it
    audit                    anyone; what would have been denied is flagged

A ServerPolicy applies that default to one service (all ports) or one service port and
carries explicit Authorizations: grants naming client identities, or `unauthenticated`,
optionally narrowed to client networks (`{cidr, except}`). MeshPolicy holds the mesh
defaults. How these combine with intentions per connection is in core/authz.py.

Client identity patterns (Tether's form; Linkerd's `*` and `*.suffix` carried over):

    *                                     any authenticated caller, any trust domain
    web                                   service `web` of the default namespace, this
                                          mesh's trust domain (as a Consul intention's
                                          SourceName without SourceNS)
    spiffe://<td>/ns/<ns>/dc/<dc>/svc/<svc>   exactly that identity; any of the four
                                          parts may be `*` (the whole part)
    *.<suffix>                            identities whose name `<svc>.<ns>.<dc>.<td>`
                                          ends in `.<suffix>`, e.g. `*.dc1.<td>` or `*.<td>`
    <svc>.<ns>.<dc>.<td>                  that name exactly

Pure: values and validation only.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.core.cidr import LOOPBACK_NETWORKS, NetworkMatch, parse_network_match
from tether.core.errors import InvalidInput
from tether.core.intentions import ACTIONS, ALLOW, Action
from tether.core.spiffe import DEFAULT_NAMESPACE, validate_service_name, validate_trust_domain


class DefaultPolicy(enum.StrEnum):
    """What a port accepts when no authorization grants the caller (Linkerd's values)."""

    ALL_UNAUTHENTICATED = "all-unauthenticated"
    ALL_AUTHENTICATED = "all-authenticated"
    CLUSTER_AUTHENTICATED = "cluster-authenticated"
    CLUSTER_UNAUTHENTICATED = "cluster-unauthenticated"
    DENY = "deny"
    AUDIT = "audit"


#: Linkerd's install default (`proxy.defaultInboundPolicy`): allow all traffic.
MESH_DEFAULT_POLICY = DefaultPolicy.ALL_UNAUTHENTICATED
#: Linkerd: once a Server selects a port, unmatched traffic is denied (`accessPolicy: deny`).
SERVER_DEFAULT_POLICY = DefaultPolicy.DENY
#: Consul with ACLs disabled allows a connection no intention matches.
DEFAULT_INTENTION: Action = ALLOW


class CallerClass(enum.Enum):
    """How a caller authenticated, relative to this mesh."""

    UNAUTHENTICATED = "unauthenticated"  # no verified client identity (plaintext, or TLS without a cert)
    LOCAL = "authenticated"  # a verified identity in this mesh's trust domain
    FOREIGN = "authenticated in another trust domain"


def parse_default_policy(value: object, *, field: str = "defaultPolicy") -> DefaultPolicy:
    """The DefaultPolicy named `value`; unknown names raise InvalidInput listing the valid ones."""
    try:
        return DefaultPolicy(value)
    except ValueError:
        names = ", ".join(p.value for p in DefaultPolicy)
        raise InvalidInput(f"{field}: unknown default policy {value!r}; use one of {names}") from None


def parse_action(value: object, *, field: str = "defaultIntention") -> Action:
    """An intention action (`allow` | `deny`); anything else raises InvalidInput naming it."""
    if value not in ACTIONS:
        raise InvalidInput(f"{field}: {value!r} must be 'allow' or 'deny'")
    return value  # type: ignore[return-value]


def default_admits(policy: DefaultPolicy, caller: CallerClass, in_cluster_network: bool) -> bool:
    """True when `policy` lets a caller of this class through to the intention step."""
    if policy in (DefaultPolicy.ALL_UNAUTHENTICATED, DefaultPolicy.AUDIT):
        return True
    if policy is DefaultPolicy.ALL_AUTHENTICATED:
        return caller is not CallerClass.UNAUTHENTICATED
    if policy is DefaultPolicy.CLUSTER_AUTHENTICATED:
        return caller is CallerClass.LOCAL
    if policy is DefaultPolicy.CLUSTER_UNAUTHENTICATED:
        return caller is CallerClass.LOCAL or in_cluster_network
    return False  # deny


# --- client identity patterns ---------------------------------------------------------------


class PatternKind(enum.Enum):
    ANY = "any"  # `*`
    SERVICE = "service"  # `web`: that service in the local trust domain
    SPIFFE = "spiffe"  # field-wise, each field exact or `*`
    SUFFIX = "suffix"  # `*.<suffix>` over `<svc>.<ns>.<dc>.<td>`


@dataclass(frozen=True, slots=True)
class IdentityPattern:
    """A parsed client identity pattern; `text` is what the user wrote."""

    text: str
    kind: PatternKind
    trust_domain: str = "*"
    namespace: str = "*"
    datacenter: str = "*"
    service: str = "*"
    suffix: str = ""

    def __str__(self) -> str:
        return self.text


_ANY = "*"
_DNS_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_PATH = re.compile(r"^/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
_PATTERN_HELP = (
    "use '*', a service name, 'spiffe://<td>/ns/<ns>/dc/<dc>/svc/<svc>' (any part may be '*'), "
    "'*.<suffix>' or '<svc>.<ns>.<dc>.<td>'"
)


def parse_identity_pattern(value: object, *, field: str = "identities") -> IdentityPattern:
    """Parse one client identity pattern (forms in the module docstring)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field}: {value!r} is not an identity pattern; {_PATTERN_HELP}")
    try:
        return _parse_pattern(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{field + ': ' if field else ''}identity {value!r}: {exc.message}") from None


def _parse_pattern(text: str) -> IdentityPattern:
    if text == _ANY:
        return IdentityPattern(text, PatternKind.ANY)
    if text.lower().startswith("spiffe://"):
        host, _, path = text[len("spiffe://") :].partition("/")
        match = _PATH.match("/" + path)
        if match is None:
            raise InvalidInput("a SPIFFE pattern is spiffe://<td>/ns/<ns>/dc/<dc>/svc/<svc> (any part may be '*')")
        td = _ANY if host == _ANY else validate_trust_domain(host)
        ns, dc, svc = (_segment(part, what) for part, what in zip(match.groups(), ("namespace", "datacenter", "service")))
        return IdentityPattern(text, PatternKind.SPIFFE, td, ns, dc, svc)
    if text.startswith("*."):
        suffix = text[2:].lower()
        _check_labels(suffix)
        return IdentityPattern(text, PatternKind.SUFFIX, suffix=suffix)
    if _ANY in text:
        raise InvalidInput("'*' may only be the whole pattern, a leading '*.', or a whole part of a SPIFFE pattern")
    if "." in text:
        labels = text.lower().split(".")
        if len(labels) < 4:
            raise InvalidInput("a dotted identity name is '<svc>.<ns>.<dc>.<trust-domain>'")
        _check_labels(text.lower())
        svc, ns, dc = (_segment(part, what) for part, what in zip(labels[:3], ("service", "namespace", "datacenter")))
        return IdentityPattern(text, PatternKind.SPIFFE, validate_trust_domain(".".join(labels[3:])), ns, dc, svc)
    return IdentityPattern(text, PatternKind.SERVICE, service=validate_service_name(text))


def _segment(part: str, what: str) -> str:
    if part == _ANY:
        return part
    if what == "service":
        return validate_service_name(part)
    if not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", part):
        raise InvalidInput(f"{what} {part!r} must be one DNS label or '*'")
    return part


def _check_labels(name: str) -> None:
    for label in name.split("."):
        if not _DNS_LABEL.match(label):
            raise InvalidInput(f"{label!r} is not a valid DNS label")


def identity_name(identity: Any) -> str:
    """`<svc>.<ns>.<dc>.<td>`, lower-cased: the name `*.<suffix>` patterns match against."""
    return f"{identity.service}.{identity.namespace}.{identity.datacenter}.{identity.trust_domain}".lower()


def match_identity(pattern: IdentityPattern, identity: Any, local_trust_domain: str) -> bool:
    """True when a verified caller `identity` (a core.spiffe.SpiffeId, or None) matches."""
    if identity is None:
        return False
    if pattern.kind is PatternKind.ANY:
        return True
    if not getattr(identity, "service", ""):
        return False  # only `*` covers identities that are not services
    if pattern.kind is PatternKind.SERVICE:
        return (identity.trust_domain == local_trust_domain and identity.service == pattern.service
                and (identity.namespace or DEFAULT_NAMESPACE) == DEFAULT_NAMESPACE)
    if pattern.kind is PatternKind.SUFFIX:
        return identity_name(identity).endswith("." + pattern.suffix)
    return all(
        want == _ANY or want == got
        for want, got in (
            (pattern.trust_domain, identity.trust_domain),
            (pattern.namespace, identity.namespace),
            (pattern.datacenter, identity.datacenter),
            (pattern.service, identity.service),
        )
    )


# --- authorizations and policies -------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


def check_object_name(value: object, *, field: str = "name") -> str:
    """Names of policies and authorizations: Kubernetes-style lower-case DNS subdomains."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInput(f"{field}: {value!r} must be lower-case letters, digits, '-' and '.', up to 253 characters")
    return value


@dataclass(frozen=True, slots=True)
class Authorization:
    """An explicit grant: callers matching `identities` (or anyone, when `unauthenticated`),
    from `networks` when given. Exactly one of identities / unauthenticated is set."""

    name: str
    identities: tuple[IdentityPattern, ...] = ()
    unauthenticated: bool = False
    networks: tuple[NetworkMatch, ...] = ()

    def __post_init__(self) -> None:
        check_object_name(self.name, field="authorization name")
        if bool(self.identities) == bool(self.unauthenticated):
            raise InvalidInput(
                f"authorization {self.name!r}: set exactly one of 'identities' (a non-empty list) or 'unauthenticated: true'"
            )

    def __str__(self) -> str:
        who = "unauthenticated" if self.unauthenticated else ", ".join(p.text for p in self.identities)
        where = f" from {'; '.join(str(n) for n in self.networks)}" if self.networks else ""
        return f"{self.name} ({who}{where})"


def make_authorization(
    name: object,
    *,
    identities: Iterable[object] = (),
    unauthenticated: bool = False,
    networks: Iterable[Mapping[str, Any]] = (),
    field: str = "authorization",
) -> Authorization:
    """Build an Authorization from plain values, reporting every problem at once."""
    errors: list[str] = []
    raw = list(identities)
    try:
        check_object_name(name, field=f"{field}.name")
    except InvalidInput as exc:
        errors.append(exc.message)
    if bool(raw) == bool(unauthenticated):
        errors.append(f"{field}: set exactly one of 'identities' (a non-empty list) or 'unauthenticated: true'")
    patterns = []
    for i, text in enumerate(raw):
        try:
            patterns.append(parse_identity_pattern(text, field=f"{field}.identities[{i}]"))
        except InvalidInput as exc:
            errors.append(exc.message)
    nets = []
    for i, net in enumerate(networks):
        try:
            nets.append(parse_network_match(net.get("cidr"), tuple(net.get("except", ()) or ()), field=f"{field}.networks[{i}]"))
        except InvalidInput as exc:
            errors.append(exc.message)
    if errors:
        raise invalid_input(errors)
    return Authorization(name, tuple(patterns), bool(unauthenticated), tuple(nets))  # type: ignore[arg-type]


def invalid_input(errors: list[str]) -> InvalidInput:
    """One InvalidInput for several problems; `.errors` keeps them apart for callers that list them."""
    exc = InvalidInput("; ".join(errors))
    exc.errors = tuple(errors)  # type: ignore[attr-defined]
    return exc


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """Policy for one service (`port=None`: every port without its own policy) or one port."""

    service: str
    port: int | None = None
    default_policy: DefaultPolicy = SERVER_DEFAULT_POLICY
    authorizations: tuple[Authorization, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        errors: list[str] = []
        _collect(errors, validate_service_name, self.service)
        if self.port is not None and (isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535):
            errors.append(f"port {self.port!r} must be a number from 1 to 65535 (or omitted for every port)")
        _collect(errors, lambda v: object.__setattr__(self, "default_policy", parse_default_policy(v)), self.default_policy)
        seen: set[str] = set()
        for auth in self.authorizations:
            if not isinstance(auth, Authorization):
                errors.append(f"authorizations: {auth!r} is not an Authorization")
            elif auth.name in seen:
                errors.append(f"authorizations: name {auth.name!r} is used twice")
            else:
                seen.add(auth.name)
        object.__setattr__(self, "authorizations", tuple(self.authorizations))
        if not self.name:
            object.__setattr__(self, "name", f"{self.service}-{self.port}" if self.port else str(self.service).lower())
        _collect(errors, lambda v: check_object_name(v, field="name"), self.name)
        if errors:
            raise InvalidInput(f"server policy for {self.scope}: " + "; ".join(errors))

    @property
    def scope(self) -> str:
        """`db:5432`, or `db` for a whole-service policy."""
        return f"{self.service}:{self.port}" if self.port is not None else f"{self.service}"


@dataclass(frozen=True, slots=True)
class MeshPolicy:
    """The mesh-wide defaults: server policy for ports without one, and the intention default."""

    default_policy: DefaultPolicy = MESH_DEFAULT_POLICY
    default_intention: Action = DEFAULT_INTENTION
    cluster_networks: tuple[NetworkMatch, ...] = ()
    probe_networks: tuple[NetworkMatch, ...] = field(
        default_factory=lambda: tuple(parse_network_match(n) for n in LOOPBACK_NETWORKS)
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_policy", parse_default_policy(self.default_policy))
        parse_action(self.default_intention)


def _collect(errors: list[str], check: Any, value: object) -> None:
    try:
        check(value)
    except InvalidInput as exc:
        errors.append(exc.message)
