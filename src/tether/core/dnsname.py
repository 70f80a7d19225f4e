"""Parsing DNS query names into catalog questions (Consul's DNS interface, pure).

    [<tag>.]<service>.service[.<dc>].<domain>     healthy instances (A; SRV when asked)
    _<service>._<tag|tcp>[.service][.<dc>].<domain>  RFC 2782 SRV form
    <service>.connect.<domain>                    healthy Connect endpoints (proxies, natives)
    <service>.virtual.<domain>                    the service's virtual IP (transparent proxy)
    <node>.node[.<dc>].<domain>                   a node's address

`<domain>` is `tether.` and also `consul.`, so applications configured for Consul resolve
unchanged. Anything else is not ours: the server answers NXDOMAIN and never recurses.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAINS = ("tether", "consul")


@dataclass(frozen=True)
class Question:
    kind: str  # "service", "connect", "virtual" or "node"
    name: str
    tag: str = ""
    datacenter: str = ""
    srv_form: bool = False  # asked in the _service._tag form


def parse_query_name(qname: str) -> Question | None:
    """The catalog question a DNS name asks, or None when the name is not ours."""
    labels = [label.lower() for label in qname.rstrip(".").split(".") if label]
    if len(labels) < 3 or labels[-1] not in DOMAINS:
        return None
    labels = labels[:-1]
    if labels[0].startswith("_") and len(labels) >= 2 and labels[1].startswith("_"):
        return _rfc2782(labels)
    for kind in ("service", "connect", "virtual", "node"):
        if kind in labels[1:]:
            at = labels.index(kind, 1)
            rest = labels[at + 1:]
            if len(rest) > 1 or (kind in ("connect", "virtual") and rest):
                return None
            head = labels[:at]
            if kind == "service" and len(head) == 2:
                return Question("service", head[1], tag=head[0], datacenter=rest[0] if rest else "")
            if len(head) != 1:
                return None
            return Question(kind, head[0], datacenter=rest[0] if rest else "")
    return None


def _rfc2782(labels: list[str]) -> Question | None:
    service, tag = labels[0][1:], labels[1][1:]
    rest = labels[2:]
    if rest and rest[0] == "service":
        rest = rest[1:]
    if len(rest) > 1 or not service or not tag:
        return None
    return Question("service", service, tag="" if tag == "tcp" else tag,
                    datacenter=rest[0] if rest else "", srv_form=True)
