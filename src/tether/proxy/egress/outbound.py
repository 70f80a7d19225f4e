"""The sidecar's transparent outbound listener (default 127.0.0.1:15001).

iptables (`tether connect redirect-traffic`) sends every outbound TCP connection of the
application here. Per connection, numbered as in `serve_outbound`:

  1. recover the original destination (SO_ORIGINAL_DST); a connection that was not
     redirected is refused (it would loop back into this listener);
  2. a service's virtual IP -> mutual TLS to a healthy instance of that service;
  3. otherwise peek the first bytes (the TLS ClientHello's SNI, within the peek limits)
     and ask `decide_egress` about (our service, IP, port, SNI);
  4. denied -> close; the access log names the SNI or IP:port and the rule, and
     tether_egress_blocked_total counts it;
  5. allowed -> through the entry's egress gateway (mesh mTLS whose SNI is the
     application's, then the TETHER-EGRESS preamble), or with TLS origination
     (PostgreSQL-aware with `protocolHint: postgres`), or straight to the target.
"""

from __future__ import annotations

from tether.core.external import Protocol, decide_egress
from tether.core.hostmatch import normalize_runtime_name
from tether.proxy.egress.origin import open_origination
from tether.proxy.egress.peek import peek_hello
from tether.proxy.egress.preamble import format_preamble
from tether.proxy.egress.routes import open_mesh
from tether.proxy.egress.session import Session
from tether.proxy.egress.stream import SetupError, Stream, dial_first, format_addr

#: How long to wait for a ClientHello on a port where SNI decides (a TLS entry uses it).
#: Clients that speak first send it at once; this bounds a silent or server-first client.
PEEK_TIMEOUT = 1.0
#: Elsewhere the SNI only names the destination in logs and toward the gateway, so a
#: server-first protocol (MySQL, SMTP) waits no longer than this before going on.
SHORT_PEEK_TIMEOUT = 0.1


def tls_ports(snapshot) -> frozenset[int]:
    return frozenset(p.number for s in snapshot.services for p in s.ports if p.protocol == Protocol.TLS)


async def serve_outbound(px, sess: Session, sock) -> tuple[Stream, Stream, bytes]:
    """Set one redirected connection up; (client stream, upstream stream, bytes to send upstream first)."""
    loop = px.loop
    sess.source = px.material.spiffe_id
    # 1. Where the application was going.
    try:
        ip, port = px.original_destination(sock)
    except OSError as e:
        raise SetupError("not-redirected", f"no original destination ({e.strerror or e}): applications reach "
                         "this listener through iptables (tether connect redirect-traffic), not directly") from None
    if (ip, port) == tuple(sock.getsockname()[:2]):
        raise SetupError("not-redirected", f"connection to the outbound listener itself ({format_addr(ip, port)}); "
                         "applications reach it through iptables (tether connect redirect-traffic)")
    sess.destination = format_addr(ip, port)
    app = Stream(loop, sock, sess.source_address)
    # 2. A mesh service by its virtual IP: mutual TLS, as an explicit upstream would.
    service = px.routes.by_vip.get(ip)
    if service is not None:
        sess.route, sess.rule = "mesh", f"virtual IP of mesh service {service!r}"
        up, pool, member = await open_mesh(loop, px.routes, service, px.contexts.client, None, px.connect_timeout)
        sess.hold(pool, member)
        sess.upstream_address = up.peer
        return app, up, b""
    # 3. Peek, then decide.
    first, hello = await peek_hello(app, PEEK_TIMEOUT if port in px.tls_ports else SHORT_PEEK_TIMEOUT)
    sni = normalize_runtime_name(hello.sni) if hello is not None and hello.sni else None
    sess.sni = sni
    d = decide_egress(px.snapshot, px.service, ip, port, sni)
    sess.entry = d.entry.name if d.entry is not None else None
    sess.rule = d.reason
    # 4. Denied: close, and say what was blocked.
    if not d.allowed:
        px.stats.count_blocked("sidecar", px.service, f"{sni}:{port}" if sni else format_addr(ip, port))
        raise SetupError("denied", "")
    sess.pre_received = len(first)
    # 5. Allowed: pick the way out.
    if d.entry is not None and d.entry.egress_gateway:
        sess.route = "gateway"
        up, pool, member = await open_mesh(loop, px.routes, d.entry.egress_gateway, px.contexts.client, sni,
                                           px.connect_timeout)
        sess.hold(pool, member)
        sess.upstream_address = up.peer
        return app, up, format_preamble(ip, port) + first
    if d.target.tls is not None:
        sess.route = "originate-postgres" if d.entry.protocol_hint == "postgres" else "originate"
        up, first = await open_origination(loop, app, first, d.entry, d.target, px.origination, px.connect_timeout)
        sess.upstream_address = up.peer
        sess.pre_received = len(first)
        return app, up, first
    sess.route = "direct"
    sock_up, shown = await dial_first(loop, d.target.addresses, px.connect_timeout)
    sess.upstream_address = shown
    return app, Stream(loop, sock_up, shown), first
