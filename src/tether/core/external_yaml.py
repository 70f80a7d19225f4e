"""Load external services from Tether YAML and Istio ServiceEntry/DestinationRule documents.

Pure core code behind `tether apply -f` and the HTTP API: text (or already-decoded JSON
documents) in, an `ExternalConfig` of core/external.py values out. Strict and
all-or-nothing: an unknown field, a field that does not map onto Tether's model, or a
kind this loader does not take is an error naming its document and path, every problem
is collected, and nothing is returned unless the whole input is valid.

One hand-written reader serves both forms, so Tether and Istio documents get the same
error paths; the result is the frozen dataclasses of core/external.py, which is what the
rest of Tether uses, so no second (pydantic) model of the same data is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import re
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from tether.core.errors import InvalidInput, TooLarge
from tether.core.k8s_input import expand_documents
from tether.core.external import (
    Endpoint,
    ExternalService,
    OutboundMode,
    OutboundPolicy,
    Protocol,
    Resolution,
    ServicePort,
    TlsMode,
    TlsOrigination,
    external_service_problems,
    raise_problems,
    registry_problems,
)
from tether.core.nesting import yaml_depth_problem

TETHER_API = "tether.dev/v1"
ISTIO_APIS = frozenset({"networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1"})
#: (apiVersion family, kind) pairs this loader takes; a dispatcher routes other kinds elsewhere.
EXTERNAL_KINDS = frozenset({("tether.dev", "ExternalService"), ("tether.dev", "OutboundPolicy"),
                            ("networking.istio.io", "ServiceEntry"), ("networking.istio.io", "DestinationRule")})
#: Bigger inputs are refused before parsing: registries are small, and this bounds the work.
MAX_INPUT_BYTES = 1 << 20
#: Annotations that carry Tether-only settings on an Istio ServiceEntry.
ANNOTATION_PROTOCOL_HINT = "tether.dev/protocol-hint"
ANNOTATION_ALLOWED_SOURCES = "tether.dev/allowed-sources"
ANNOTATION_EGRESS_GATEWAY = "tether.dev/egress-gateway"

# Istio port protocols and what they become at L4 (HTTPS is routed by SNI, like TLS).
_ISTIO_PROTOCOLS = {"TCP": Protocol.TCP, "TLS": Protocol.TLS, "HTTPS": Protocol.TLS,
                    "MONGO": Protocol.TCP, "MYSQL": Protocol.TCP, "REDIS": Protocol.TCP}
# DNS_ROUND_ROBIN dials resolved addresses in order, as DNS does in Tether; DYNAMIC_DNS
# resolves each connection's SNI, which is what NONE does at Tether's egress gateway.
_ISTIO_RESOLUTIONS = {"NONE": Resolution.NONE, "STATIC": Resolution.STATIC, "DNS": Resolution.DNS,
                      "DNS_ROUND_ROBIN": Resolution.DNS, "DYNAMIC_DNS": Resolution.NONE}
# Known Istio fields that have no Tether meaning: refused with the reason.
_REFUSED = {
    "workloadSelector": "selects mesh workloads; Tether external services are MESH_EXTERNAL only",
    "labels": "endpoint labels only feed DestinationRule subsets, which Tether does not support",
    "network": "multi-network endpoints are not supported for external services",
    "locality": "locality-aware routing is not supported for external services",
    "serviceAccount": "is for mesh workloads; external endpoints have no mesh identity",
    "subsets": "subsets are not supported; use one external service per destination",
    "loadBalancer": "Tether dials endpoints in order; load-balancer settings are not supported",
    "connectionPool": "connection-pool settings are not supported for external services",
    "outlierDetection": "outlier detection is not supported for external services",
    "tunnel": "tunnelling is not supported",
    "proxyProtocol": "PROXY protocol is not supported",
    "credentialName": "Kubernetes secrets are not available; give caCertificates, clientCertificate and "
                      "privateKey as file paths",
    "caCrl": "certificate revocation lists are not supported",
}
_DOC_NUMBER = re.compile(r" document (\d+)")  # to report problems in document order
_KIND_HINTS = {
    "Sidecar": "for its outboundTrafficPolicy use a tether.dev/v1 OutboundPolicy with `services: {NAME: MODE}`",
    "Gateway": "Tether's egress gateway (`tether proxy -gateway egress`) needs no Gateway object",
    "VirtualService": "Tether routes external traffic by the registry itself; drop the VirtualService",
}


@dataclass(frozen=True, slots=True)
class ExternalConfig:
    """What a set of documents declares. `policy` is None when no OutboundPolicy was given.

    `documents` are the entries as applied, keyed for storage (`services/<name>`,
    `destination-rules/<namespace>/<name>`): a DestinationRule is an object of its own,
    folded into its entry whenever the registry is read, so re-applying the entry keeps it
    (one whose host no entry lists yet waits for one)."""

    services: tuple[ExternalService, ...] = ()
    policy: OutboundPolicy | None = None
    documents: tuple[tuple[str, dict[str, Any]], ...] = field(default=(), compare=False)  # storage form
    notes: tuple[str, ...] = field(default=(), compare=False)  # accepted with the meaning kept: warnings


class _StrictLoader(yaml.SafeLoader):
    """safe_load plus: duplicate keys are errors, and aliases are refused (no expansion bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError(f"YAML aliases (*name) are not accepted{self.peek_event().start_mark}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.YAMLError(f"duplicate key {key!r}{key_node.start_mark}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_external_yaml(text: str | bytes, *, source: str = "<input>") -> ExternalConfig:
    """Parse multi-document YAML into an ExternalConfig; InvalidInput lists every problem."""
    if len(text) > MAX_INPUT_BYTES:
        raise TooLarge(f"{source}: {len(text)} bytes of YAML; at most {MAX_INPUT_BYTES} are accepted")
    too_deep = yaml_depth_problem(text, source)
    if too_deep:
        raise InvalidInput(too_deep)
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: YAML does not parse: {exc}") from None
    return parse_external_documents(docs, source=source)


def parse_external_documents(docs: Iterable[object], *, source: str = "<input>",
                             numbers: Sequence[str] | None = None) -> ExternalConfig:
    """The same, for documents already decoded (e.g. a JSON API body). `numbers`: the
    documents' numbers in a larger file they were taken from (already expanded)."""
    problems: list[str] = []
    notes: list[str] = []
    documents: list[tuple[str, dict[str, Any]]] = []
    services: list[tuple[str, ExternalService]] = []
    rules: list[tuple[str, str, list[tuple[int | None, TlsOrigination]]]] = []
    sans: dict[str, tuple[str, ...]] = {}
    policies: list[OutboundPolicy] = []
    numbered = list(zip(numbers, docs)) if numbers is not None else expand_documents(docs)
    for i, doc in numbered:
        r = _Reader(problems, f"{source} document {i}", notes)
        head = r.mapping(doc, "", {"apiVersion", "kind", "metadata", "spec"}, required=("apiVersion", "kind"))
        if head is None:
            continue
        api, kind = r.string(head.get("apiVersion"), "apiVersion"), r.string(head.get("kind"), "kind")
        meta = r.mapping(head.get("metadata"), "metadata", _META_FIELDS, required=("name",))
        named = r.string((meta or {}).get("name"), "metadata.name") if meta is not None else None
        namespace = r.string((meta or {}).get("namespace"), "metadata.namespace", optional=True) or "default"
        name = named or "?"
        r.where = f"{source} document {i} ({kind} {name!r})"
        spec = head.get("spec")
        kept = {**head, "metadata": dict(meta or {})}
        if api == TETHER_API and kind == "ExternalService":
            svc = _tether_service(r, name, spec)
            if named:  # without a name the entry is reported above and not checked further
                services.append((r.where, svc))
                documents.append((f"services/{svc.name}", kept))
        elif api == TETHER_API and kind == "OutboundPolicy":
            policies.append(_tether_policy(r, spec))
        elif api in ISTIO_APIS and kind == "ServiceEntry":
            # Entries of two namespaces must not collide: outside `default` the name carries the namespace.
            entry = name if namespace == "default" else f"{name}.{namespace}"
            svc, names = _istio_service_entry(r, entry, spec, (meta or {}).get("annotations"))
            if named:
                services.append((r.where, svc))
                sans[entry] = names
                documents.append((f"services/{entry}", kept))
        elif api in ISTIO_APIS and kind == "DestinationRule":
            if (rule := _istio_destination_rule(r, spec)) is not None:
                rules.append((r.where, *rule))
                if named:
                    documents.append((f"destination-rules/{namespace}/{name}", kept))
        elif api is not None and kind is not None:
            hint = _KIND_HINTS.get(kind, "this loader takes ExternalService and OutboundPolicy (tether.dev/v1), "
                                         "ServiceEntry and DestinationRule (networking.istio.io/v1alpha3|v1beta1|v1)")
            problems.append(f"{r.where}: kind {kind} of apiVersion {api} is not supported here: {hint}")
    if len(policies) > 1:
        problems.append(f"{source}: {len(policies)} OutboundPolicy documents; give exactly one")
    merged = _apply_destination_rules(services, rules, sans, problems)
    for where, svc in merged:
        problems += external_service_problems(svc, prefix=f"{where}: ")
    problems.sort(key=lambda p: int(m.group(1)) if (m := _DOC_NUMBER.match(p, len(source))) else 1 << 30)
    problems += [f"{source}: {p}" for p in registry_problems(svc for _, svc in merged)]
    keys: dict[str, int] = {}
    for n, (key, _) in enumerate(documents):
        if key in keys and key.startswith("destination-rules/"):  # entries: registry_problems names them
            problems.append(f"{source}: {key} is declared twice in these documents; keep one")
        keys[key] = n
    raise_problems(problems, source)
    return ExternalConfig(tuple(svc for _, svc in merged), policies[0] if policies else None, tuple(documents),
                          tuple(notes))


class _Reader:
    """Typed, path-naming field access that records problems instead of raising."""

    def __init__(self, problems: list[str], where: str, notes: list[str] | None = None) -> None:
        self.problems, self.where, self.notes = problems, where, notes if notes is not None else []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path + ': ' if path else ''}{message}")

    def note(self, path: str, message: str) -> None:
        """Accepted with its meaning kept, in a changed form: printed as a warning."""
        self.notes.append(f"{self.where}: {path + ': ' if path else ''}{message}")

    def mapping(self, value: object, path: str, allowed: set[str] | frozenset[str],
                required: tuple[str, ...] = (), refuse: bool = True) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.bad(path, f"expected a mapping, got {type(value).__name__}")
            return None
        dot = f"{path}." if path else ""
        for key in value:
            if key in allowed:
                continue
            if refuse and key in _REFUSED:
                self.bad(f"{dot}{key}", f"not supported: {_REFUSED[key]}")
            else:
                self.bad(f"{dot}{key}", f"unknown field (known here: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in value:
                self.bad(f"{dot}{key}", "required field is missing")
        return value

    def string(self, value: object, path: str, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, str) and value:
            return value
        self.bad(path, f"expected a non-empty string, got {value!r}")
        return None

    def integer(self, value: object, path: str) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.bad(path, f"expected an integer, got {value!r}")
        return None

    def strings(self, value: object, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.bad(path, f"expected a list of strings, got {type(value).__name__}")
            return ()
        return tuple(s for j, v in enumerate(value) if (s := self.string(v, f"{path}[{j}]")) is not None)

    def items(self, value: object, path: str) -> list[tuple[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(path, f"expected a list, got {type(value).__name__}")
            return []
        return [(f"{path}[{j}]", v) for j, v in enumerate(value)]

    def table(self, value: object, path: str) -> dict[str, Any]:
        """A free-form mapping with string keys (e.g. endpoint port names), or {}."""
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.bad(path, f"expected a mapping of names, got {value!r}")
            return {}
        return value

    def choice(self, value: object, path: str, table: dict[str, Any], default: Any, fold: bool = False) -> Any:
        if value is None:
            return default
        if isinstance(value, str) and (value.upper() if fold else value) in table:
            return table[value.upper() if fold else value]
        self.bad(path, f"{value!r} is not supported; use one of {', '.join(table)}")
        return default


_SERVICE_FIELDS = {"hosts", "addresses", "ports", "location", "resolution", "endpoints"}
_ENDPOINT_FIELDS = {"address", "ports", "weight"}
_META_FIELDS = {"name", "namespace", "labels", "annotations"}
_TLS_FIELDS = {"mode", "caCertificates", "clientCertificate", "privateKey", "sni", "subjectAltNames"}
_TETHER_PROTOCOLS = {p.value: p for p in Protocol}
_TETHER_RESOLUTIONS = {r.value: r for r in Resolution}
_TLS_MODES = {m.value: m for m in TlsMode}


def _common_spec(r: _Reader, spec: dict[str, Any], protocols: dict[str, Protocol],
                 resolutions: dict[str, Resolution], fold: bool = False) -> dict[str, Any]:
    """The fields Tether and Istio spell the same way, as ExternalService keyword arguments."""
    ports = []
    for path, item in r.items(spec.get("ports"), "spec.ports"):
        if (p := r.mapping(item, path, {"number", "name", "protocol", "targetPort"}, ("number", "name"))) is None:
            continue
        target = p.get("targetPort")
        ports.append(ServicePort(r.integer(p.get("number"), f"{path}.number") or 0,
                                 r.string(p.get("name"), f"{path}.name") or "",
                                 r.choice(p.get("protocol"), f"{path}.protocol", protocols, Protocol.TCP, fold),
                                 None if target is None else r.integer(target, f"{path}.targetPort")))
    endpoints = []
    for path, item in r.items(spec.get("endpoints"), "spec.endpoints"):
        if (e := r.mapping(item, path, _ENDPOINT_FIELDS, ("address",))) is None:
            continue
        eports = r.table(e.get("ports"), f"{path}.ports")
        if "weight" in e:
            r.bad(f"{path}.weight", "weighted balancing is not supported: Tether dials the endpoints in order, so a "
                                    "weight would be ignored; drop it (or split the entry)")
        endpoints.append(Endpoint(r.string(e.get("address"), f"{path}.address") or "",
                                  tuple((str(k), r.integer(v, f"{path}.ports.{k}") or 0) for k, v in eports.items())))
    location = spec.get("location", "MESH_EXTERNAL")
    return dict(hosts=tuple(h.lower() for h in r.strings(spec.get("hosts"), "spec.hosts")),
                addresses=r.strings(spec.get("addresses"), "spec.addresses"), ports=tuple(ports),
                resolution=r.choice(spec.get("resolution"), "spec.resolution", resolutions, Resolution.NONE),
                endpoints=tuple(endpoints), location=location if isinstance(location, str) else repr(location))


def _tls(r: _Reader, value: object, path: str) -> TlsOrigination:
    t = r.mapping(value, path, _TLS_FIELDS | {"insecureSkipVerify"})
    if t is None:
        return TlsOrigination()
    if t.get("mode") == "ISTIO_MUTUAL":
        r.bad(f"{path}.mode", "ISTIO_MUTUAL is the mesh's own mTLS, which Tether applies by itself toward its "
                              "egress gateway; drop this setting")
    elif t.get("insecureSkipVerify") not in (None, False):
        r.bad(f"{path}.insecureSkipVerify", "Tether always verifies the server certificate")
    return TlsOrigination(
        mode=r.choice(t.get("mode"), f"{path}.mode", _TLS_MODES, TlsMode.DISABLE)
        if t.get("mode") != "ISTIO_MUTUAL" else TlsMode.DISABLE,
        ca_certificates=r.string(t.get("caCertificates"), f"{path}.caCertificates", optional=True),
        client_certificate=r.string(t.get("clientCertificate"), f"{path}.clientCertificate", optional=True),
        private_key=r.string(t.get("privateKey"), f"{path}.privateKey", optional=True),
        sni=r.string(t.get("sni"), f"{path}.sni", optional=True),
        subject_alt_names=r.strings(t.get("subjectAltNames"), f"{path}.subjectAltNames"))


def _tether_service(r: _Reader, name: str, spec: object) -> ExternalService:
    s = r.mapping(spec, "spec", _SERVICE_FIELDS | {"tls", "protocolHint", "allowedSources", "egressGateway"},
                  refuse=False) or {}
    common = _common_spec(r, s, _TETHER_PROTOCOLS, _TETHER_RESOLUTIONS)
    return ExternalService(
        name, **common, tls=_tls(r, s["tls"], "spec.tls") if "tls" in s else TlsOrigination(),
        protocol_hint=r.string(s.get("protocolHint"), "spec.protocolHint", optional=True),
        allowed_sources=r.strings(s["allowedSources"], "spec.allowedSources") if "allowedSources" in s else ("*",),
        egress_gateway=r.string(s.get("egressGateway"), "spec.egressGateway", optional=True))


def _tether_policy(r: _Reader, spec: object) -> OutboundPolicy:
    s = r.mapping(spec, "spec", {"mode", "services"}, ("mode",)) or {}
    modes = {m.value: m for m in OutboundMode}
    overrides = r.table(s.get("services"), "spec.services")
    return OutboundPolicy(r.choice(s.get("mode"), "spec.mode", modes, OutboundMode.ALLOW_ANY),
                          tuple((str(k), r.choice(v, f"spec.services.{k}", modes, OutboundMode.ALLOW_ANY))
                                for k, v in overrides.items()))


def _export_to(r: _Reader, value: object, path: str) -> None:
    if value is not None and r.strings(value, path) != ("*",):
        r.bad(path, f"{value!r}: Tether external services are visible mesh-wide; only ['*'] is accepted "
                    "(restrict callers with the tether.dev/allowed-sources annotation)")


def _istio_service_entry(r: _Reader, name: str, spec: object,
                         annotations: object) -> tuple[ExternalService, tuple[str, ...]]:
    s = r.mapping(spec, "spec", _SERVICE_FIELDS | {"exportTo", "subjectAltNames"}) or {}
    _export_to(r, s.get("exportTo"), "spec.exportTo")
    protocols = dict(_ISTIO_PROTOCOLS)
    ports = s.get("ports") if isinstance(s.get("ports"), list) else []
    for l7 in ("HTTP", "HTTP2", "GRPC", "GRPC-WEB"):
        # Istio reads protocol names case-insensitively, so this loader does too.
        if any(isinstance(p, dict) and str(p.get("protocol", "")).upper() == l7 for p in ports):
            if s.get("addresses"):
                # Matched by destination address, the port means the same at L4: carried as opaque TCP.
                r.note("spec.ports", f"protocol {l7} is carried as opaque TCP to spec.addresses: Tether proxies "
                                     "external traffic at L4, so who may reach which address is as written, but "
                                     "nothing is HTTP-aware")
            else:
                r.bad("spec.ports", f"protocol {l7} is an L7 protocol, and without spec.addresses Istio tells such "
                                    "entries apart by the HTTP Host header, which Tether (L4) cannot: give the "
                                    "entry's addresses (its port is then carried as opaque TCP), or use TLS for "
                                    "traffic routed by SNI")
            protocols[l7] = Protocol.TCP
    common = _common_spec(r, s, protocols, _ISTIO_RESOLUTIONS, fold=True)
    if common["location"] == "MESH_INTERNAL":
        r.bad("spec.location", "MESH_INTERNAL is not supported: register mesh workloads as Tether services")
        common["location"] = "MESH_EXTERNAL"
    notes = annotations if isinstance(annotations, dict) else {}
    hint, sources = notes.get(ANNOTATION_PROTOCOL_HINT), notes.get(ANNOTATION_ALLOWED_SOURCES)
    gateway = notes.get(ANNOTATION_EGRESS_GATEWAY)
    allowed = tuple(x.strip() for x in sources.split(",")) if isinstance(sources, str) else ("*",)
    svc = ExternalService(name, **common, protocol_hint=hint if isinstance(hint, str) else None,
                          allowed_sources=allowed, egress_gateway=gateway if isinstance(gateway, str) else None)
    return svc, r.strings(s.get("subjectAltNames"), "spec.subjectAltNames")


def _istio_destination_rule(r: _Reader, spec: object) -> tuple[str, list[tuple[int | None, TlsOrigination]]] | None:
    s = r.mapping(spec, "spec", {"host", "trafficPolicy", "exportTo"}, ("host",))
    if s is None:
        return None
    _export_to(r, s.get("exportTo"), "spec.exportTo")
    tp = r.mapping(s.get("trafficPolicy", {}), "spec.trafficPolicy", {"tls", "portLevelSettings"}) or {}
    settings: list[tuple[int | None, TlsOrigination]] = []
    if "tls" in tp:
        settings.append((None, _tls(r, tp["tls"], "spec.trafficPolicy.tls")))
    for path, item in r.items(tp.get("portLevelSettings"), "spec.trafficPolicy.portLevelSettings"):
        if (pl := r.mapping(item, path, {"port", "tls"}, ("port", "tls"))) is None:
            continue
        port = r.mapping(pl.get("port"), f"{path}.port", {"number"}, ("number",)) or {}
        settings.append((r.integer(port.get("number"), f"{path}.port.number"), _tls(r, pl.get("tls"), f"{path}.tls")))
    if not settings:
        r.bad("spec.trafficPolicy", "Tether reads only tls settings from a DestinationRule, and there are none")
    host = r.string(s.get("host"), "spec.host")
    return (host.lower(), settings) if host else None


def _apply_destination_rules(services: list[tuple[str, ExternalService]],
                             rules: list[tuple[str, str, list[tuple[int | None, TlsOrigination]]]],
                             sans: dict[str, tuple[str, ...]], problems: list[str]) -> list[tuple[str, ExternalService]]:
    """Fold each DestinationRule's TLS settings into the one entry that lists its host; a
    rule whose host no entry lists is no error: it applies once such an entry is applied
    (the registry's apply warns about it)."""
    out = list(services)
    done: dict[str, str] = {}
    for where, host, settings in rules:
        hits = [i for i, (_, svc) in enumerate(out) if host in svc.hosts]
        if not hits:
            continue
        if len(hits) > 1:
            problems.append(f"{where}: spec.host {host!r} is listed by several entries: "
                            + ", ".join(repr(out[i][1].name) for i in hits))
            continue
        svc_where, svc = out[hits[0]]
        ports = {p.number for p in svc.ports}
        tls_values = {t for _, t in settings}
        bad_ports = sorted(str(n) for n, _ in settings if n is not None and n not in ports)
        if svc.name in done or svc.tls != TlsOrigination():
            problems.append(f"{where}: external service {svc.name!r} already has TLS settings"
                            + (f" from {done[svc.name]}" if svc.name in done else ""))
        elif bad_ports:
            problems.append(f"{where}: portLevelSettings port(s) {', '.join(bad_ports)} are not ports of {svc.name!r}")
        elif len(tls_values) > 1 or (None not in {n for n, _ in settings} and {n for n, _ in settings} != ports):
            problems.append(f"{where}: Tether originates TLS for a whole external service; settings that differ by "
                            f"port need one ServiceEntry per port ({svc.name!r} has ports "
                            f"{', '.join(str(p) for p in sorted(ports))})")
        else:
            tls = tls_values.pop()
            tls = replace(tls, subject_alt_names=tls.subject_alt_names or sans.get(svc.name, ()))
            out[hits[0]] = (svc_where, replace(svc, tls=tls))
            done[svc.name] = where
    return out


# ---------------------------------------------------------------- formatting (Tether YAML form)

def format_external_service(svc: ExternalService) -> dict[str, Any]:
    """The Tether YAML document for one entry; parse_external_documents reads it back equal."""
    spec: dict[str, Any] = {"hosts": list(svc.hosts), "ports": [_drop_none(
        {"number": p.number, "name": p.name, "protocol": str(p.protocol), "targetPort": p.target_port})
        for p in svc.ports], "resolution": str(svc.resolution), "location": svc.location}
    if svc.addresses:
        spec["addresses"] = list(svc.addresses)
    if svc.endpoints:
        spec["endpoints"] = [_drop_none({"address": e.address, "ports": dict(e.ports) or None}) for e in svc.endpoints]
    t = svc.tls
    if t != TlsOrigination():
        spec["tls"] = _drop_none({"mode": str(t.mode), "caCertificates": t.ca_certificates,
                                  "clientCertificate": t.client_certificate, "privateKey": t.private_key,
                                  "sni": t.sni, "subjectAltNames": list(t.subject_alt_names) or None})
    if svc.protocol_hint is not None:
        spec["protocolHint"] = svc.protocol_hint
    if svc.allowed_sources != ("*",):
        spec["allowedSources"] = list(svc.allowed_sources)
    if svc.egress_gateway is not None:
        spec["egressGateway"] = svc.egress_gateway
    return {"apiVersion": TETHER_API, "kind": "ExternalService", "metadata": {"name": svc.name}, "spec": spec}


def format_outbound_policy(policy: OutboundPolicy, name: str = "mesh") -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": str(policy.mode)}
    if policy.overrides:
        spec["services"] = {k: str(v) for k, v in policy.overrides}
    return {"apiVersion": TETHER_API, "kind": "OutboundPolicy", "metadata": {"name": name}, "spec": spec}


def format_external_yaml(config: ExternalConfig) -> str:
    docs = [format_external_service(s) for s in config.services]
    if config.policy is not None:
        docs.append(format_outbound_policy(config.policy))
    return yaml.safe_dump_all(docs, sort_keys=False)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}

