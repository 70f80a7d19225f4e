"""The egress gateway's listener: mesh mutual TLS in, external traffic out.

Sidecars send the traffic of entries with `egressGateway` here. Per connection, numbered
as in `serve_gateway`:

  1. mutual TLS as a server: the client certificate must chain to the mesh roots; its
     SPIFFE ID names the source service. The SNI of this handshake is recorded from the
     raw ClientHello (sans-io parse) before OpenSSL consumes it;
  2. the TETHER-EGRESS/1 preamble gives the original destination port (and IP, used
     only for plain TCP);
  3. SNI verifier: when the handshake carried an SNI, the application's own ClientHello
     inside the tunnel must announce the same name, or the connection is refused;
  4. `decide_egress` for the SOURCE service (the same per-source rules as the sidecar,
     e.g. web may reach *.payments.example and batch may not), routing TLS on the SNI
     (never on the IP the client claims);
  5. forward to the external host (an SNI under a wildcard is resolved here, so any host
     under it works without extra components), or originate TLS (SIMPLE, MUTUAL,
     PostgreSQL-aware).
"""

from __future__ import annotations

import asyncio
import ssl

from tether.core.clienthello import parse_client_hello
from tether.core.external import decide_egress
from tether.core.hostmatch import normalize_runtime_name
from tether.core.spiffe import SpiffeKind, parse_spiffe_id
from tether.proxy.der import parse_uri_sans
from tether.proxy.egress.origin import open_origination
from tether.proxy.egress.peek import MAX_PEEK, peek_hello
from tether.proxy.egress.preamble import parse_preamble
from tether.proxy.egress.session import Session
from tether.proxy.egress.stream import SetupError, Stream, dial_first, format_addr
from tether.proxy.tls import classify_tls_error


class _HelloCapture:
    """Collects the raw bytes of the mesh handshake until the ClientHello parses."""

    __slots__ = ("buf", "hello", "failed")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.hello = None
        self.failed = False

    def __call__(self, raw: bytes) -> None:
        if self.hello is not None or self.failed or len(self.buf) > MAX_PEEK:
            return
        self.buf += raw
        try:
            self.hello = parse_client_hello(self.buf)
        except ValueError:
            self.failed = True  # OpenSSL will refuse it too, with a better name


async def _mesh_handshake(px, sess: Session, mesh: Stream) -> str | None:
    """Step 1; returns the handshake's SNI (normalised), and sets up mesh.obj. The listener's
    gate (sess.gate) hears of the first bytes and of the end, and may shed it meanwhile."""
    capture = _HelloCapture()

    def sink(raw: bytes) -> None:
        if not capture.buf and sess.gate is not None:
            sess.gate.heard(sess)
        capture(raw)

    try:
        async with asyncio.timeout(px.handshake_timeout) as sess.deadline:  # no extra task, unlike wait_for
            if sess.shed_reason:
                raise TimeoutError
            await mesh.start_tls(px.contexts.server, server_side=True, raw_sink=sink)
    except TimeoutError:
        if sess.shed_reason:
            raise SetupError("handshake-failure", f"shed-under-pressure: {sess.shed_reason}") from None
        raise SetupError("handshake-failure", f"handshake-timeout: no complete handshake within "
                         f"{px.handshake_timeout:g}s") from None
    except ssl.SSLError as e:
        raise SetupError("handshake-failure", "%s: %s" % classify_tls_error(e)) from None
    except OSError as e:
        if not capture.buf:  # a TCP health check or a port probe: connect, then close
            raise SetupError("client-closed", "closed-before-hello: the client closed before sending anything") from None
        raise SetupError("handshake-failure", f"connection-reset: {e}") from None
    finally:
        sess.deadline = None
        sess.handshake_over()
    sni = capture.hello.sni if capture.hello is not None else None
    return normalize_runtime_name(sni) if sni else None


def _source_service(mesh: Stream) -> tuple[str | None, str | None]:
    """(client SPIFFE URI, its service name) from the verified client certificate."""
    try:
        uris = parse_uri_sans(mesh.obj.getpeercert(True) or b"")
    except ValueError:
        uris = ()
    uri = next((u for u in uris if u.startswith("spiffe://")), None)
    if uri is None:
        return None, None
    try:
        sid = parse_spiffe_id(uri)
    except Exception:  # any malformed ID is simply "not a service"
        return uri, None
    return uri, sid.service if sid.kind == SpiffeKind.SERVICE else None


async def _read_preamble(px, mesh: Stream) -> tuple[str | None, int, bytes]:
    buf = bytearray()
    while True:
        try:
            parsed = parse_preamble(buf)
        except ValueError as e:
            raise SetupError("denied", f"not a Tether sidecar tunnel: {e}") from None
        if parsed is not None:
            ip, port, used = parsed
            return ip, port, bytes(buf[used:])
        chunk = await mesh.recv(px.handshake_timeout)
        if chunk is None:
            raise SetupError("setup-timeout", f"no TETHER-EGRESS preamble within {px.handshake_timeout:g}s")
        if not chunk:
            raise SetupError("client-closed", "the sidecar closed before sending the TETHER-EGRESS preamble")
        buf += chunk


async def serve_gateway(px, sess: Session, sock) -> tuple[Stream, Stream, bytes]:
    loop = px.loop
    mesh = Stream(loop, sock, sess.source_address)
    # 1. Who is calling, and which name did its handshake announce.
    mesh_sni = await _mesh_handshake(px, sess, mesh)
    uri, source = _source_service(mesh)
    sess.source = uri
    sess.sni = mesh_sni
    if source is None:
        raise SetupError("denied", f"the client certificate carries no service SPIFFE ID ({uri or 'no URI SAN'})")
    # 2. Where the application was going.
    ip, port, first = await _read_preamble(px, mesh)
    sess.destination = format_addr(ip, port) if ip else f"-:{port}"
    # 3. SNI verifier: the name routed on is the name the application's TLS announces.
    if mesh_sni is not None:
        first, inner = await peek_hello(mesh, px.peek_timeout, first)
        inner_sni = normalize_runtime_name(inner.sni) if inner is not None and inner.sni else None
        if inner_sni != mesh_sni:
            sess.rule = (f"SNI verifier: the mesh handshake announced {mesh_sni!r} but the application's "
                         + (f"ClientHello announces {inner_sni!r}" if inner_sni else "stream carries no TLS "
                            "ClientHello with a server name"))
            px.stats.count_blocked("gateway", source, f"{mesh_sni}:{port}")
            raise SetupError("denied", "")
    elif ip is None:
        raise SetupError("denied", "the tunnel names neither an SNI nor a destination IP")
    # 4. Decide for the source service, as its sidecar did.
    d = decide_egress(px.snapshot, source, ip, port, mesh_sni, route_on_sni=True)
    sess.entry = d.entry.name if d.entry is not None else None
    sess.rule = d.reason
    if not d.allowed:
        px.stats.count_blocked("gateway", source, f"{mesh_sni}:{port}" if mesh_sni else format_addr(ip, port))
        raise SetupError("denied", "")
    sess.pre_received = len(first)
    # 5. Out to the external service.
    if d.target.tls is not None:
        sess.route = "originate-postgres" if d.entry.protocol_hint == "postgres" else "originate"
        up, first = await open_origination(loop, mesh, first, d.entry, d.target, px.origination,
                                           px.connect_timeout)
        sess.upstream_address = up.peer
        sess.pre_received = len(first)
        return mesh, up, first
    sess.route = "direct"
    sock_up, shown = await dial_first(loop, d.target.addresses, px.connect_timeout)
    sess.upstream_address = shown
    return mesh, Stream(loop, sock_up, shown), first
