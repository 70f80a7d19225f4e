"""TLS origination toward an external service: SIMPLE or MUTUAL, and PostgreSQL-aware.

The application (or, at the gateway, the sidecar's tunnel) speaks plain TCP; the proxy
opens TLS to the server with the entry's settings: verify against `caCertificates` (or
the system store), present `clientCertificate`/`privateKey` for MUTUAL, send `sni` (or
the entry's first exact host) and check the server's name (or one of
`subjectAltNames`). Key files are read by OpenSSL from their paths; Tether never holds
the key material itself.

PostgreSQL (`protocolHint: postgres`) does not start TLS on connect, so the proxy plays
both halves of the SSLRequest dance with core/pgwire.py: it answers the application's
SSLRequest with 'N' (libpq with sslmode=prefer/disable then continues in plaintext on
the local hop), sends its own SSLRequest to the server, expects 'S', runs the handshake
and only then forwards the StartupMessage. Redis, MongoDB and the rest need no dance.
"""

from __future__ import annotations

import asyncio
import ssl

from tether.core.external import EgressTarget, ExternalService, TlsMode, TlsOrigination
from tether.core.pgwire import (
    CancelReceived, ClientNegotiation, DirectTlsReceived, ReplyToClient, ServerNegotiation, StartTls,
    StartupReceived, TlsRefused,
)
from tether.proxy.egress.stream import SetupError, Stream, dial_first

#: A client that has not finished its startup packet after this long is dropped.
PG_NEGOTIATION_TIMEOUT = 10.0


class OriginationContexts:
    """One client SSLContext per distinct TLS setting, built on first use.

    Rebuilt from scratch whenever the registry changes (`clear()`), so a replaced CA
    file or client certificate is picked up with the next registry revision.
    """

    def __init__(self) -> None:
        self._cache: dict[TlsOrigination, ssl.SSLContext] = {}

    def clear(self) -> None:
        self._cache.clear()

    def get(self, t: TlsOrigination) -> ssl.SSLContext:
        ctx = self._cache.get(t)
        if ctx is None:
            ctx = self._cache[t] = build_origination_context(t)
        return ctx


def build_origination_context(t: TlsOrigination) -> ssl.SSLContext:
    """A client context for `t`; SetupError naming the file when one cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if t.ca_certificates:
            ctx.load_verify_locations(cafile=t.ca_certificates)
        else:
            ctx.load_default_certs()
    except (OSError, ssl.SSLError) as e:
        raise SetupError("origination-failure", f"tls.caCertificates {t.ca_certificates}: cannot load: {e}") from None
    if t.mode == TlsMode.MUTUAL:
        try:
            ctx.load_cert_chain(t.client_certificate, t.private_key)
        except (OSError, ssl.SSLError) as e:
            raise SetupError("origination-failure", f"tls.clientCertificate {t.client_certificate} / "
                             f"tls.privateKey {t.private_key}: cannot load: {e}") from None
    if t.subject_alt_names:
        ctx.check_hostname = False  # one of subjectAltNames must match instead (checked after the handshake)
    return ctx


def _check_subject_alt_names(obj: ssl.SSLObject, wanted: tuple[str, ...]) -> None:
    cert = obj.getpeercert() or {}
    names = {v.lower() for _k, v in cert.get("subjectAltName", ())}
    if not names.intersection(w.lower() for w in wanted):
        raise SetupError("origination-failure", f"the server certificate names {', '.join(sorted(names)) or 'nothing'}; "
                         f"none is in tls.subjectAltNames ({', '.join(wanted)})")


async def _tls_to_server(up: Stream, target: EgressTarget, contexts: OriginationContexts) -> None:
    t = target.tls
    try:
        await up.start_tls(contexts.get(t), server_side=False, server_hostname=target.sni)
    except ssl.SSLCertVerificationError as e:
        raise SetupError("origination-failure", f"TLS to {up.peer}: server certificate rejected: "
                         f"{e.verify_message or e}") from None
    except (ssl.SSLError, OSError) as e:
        raise SetupError("origination-failure", f"TLS to {up.peer}: {getattr(e, 'reason', None) or e}") from None
    if t.subject_alt_names:
        _check_subject_alt_names(up.obj, t.subject_alt_names)


async def _pg_client_side(down: Stream, first: bytes) -> bytes:
    """Answer the application's SSLRequest with 'N'; return its StartupMessage/CancelRequest."""
    neg = ClientNegotiation()
    data = first
    while True:
        try:
            events = neg.feed(data) if data else []
        except ValueError as e:
            raise SetupError("origination-failure", f"PostgreSQL client: {e}") from None
        for ev in events:
            if isinstance(ev, ReplyToClient):
                await down.send(ev.data)
            elif isinstance(ev, StartupReceived):
                return ev.raw + ev.rest
            elif isinstance(ev, CancelReceived):
                return ev.raw
            elif isinstance(ev, DirectTlsReceived):
                raise SetupError("origination-failure", "the PostgreSQL client opened with direct TLS "
                                 "(sslnegotiation=direct); the proxy originates TLS itself: connect with "
                                 "sslmode=prefer or disable")
        data = await down.recv(PG_NEGOTIATION_TIMEOUT)
        if data is None:
            raise SetupError("origination-failure", "PostgreSQL client sent no startup packet in "
                             f"{PG_NEGOTIATION_TIMEOUT:g}s")
        if not data:
            raise SetupError("client-closed", "the PostgreSQL client closed during the SSLRequest negotiation")


async def _pg_server_side(up: Stream, timeout: float) -> None:
    """Send SSLRequest and require 'S' (an 'N' or an error is a named failure)."""
    neg = ServerNegotiation(require_tls=True)
    await up.send(neg.request())
    while True:
        raw = await up.recv_raw(timeout)
        if raw is None:
            raise SetupError("origination-failure", f"PostgreSQL server {up.peer} did not answer SSLRequest "
                             f"within {timeout:g}s")
        if not raw:
            raise SetupError("origination-failure", f"PostgreSQL server {up.peer} closed after SSLRequest")
        try:
            ev = neg.feed(raw)
        except ValueError as e:
            raise SetupError("origination-failure", f"PostgreSQL server {up.peer}: {e}") from None
        if isinstance(ev, StartTls):
            return
        if isinstance(ev, TlsRefused):
            raise SetupError("origination-failure", f"PostgreSQL server {up.peer}: {ev.message}")


async def open_origination(loop: asyncio.AbstractEventLoop, down: Stream, first: bytes, entry: ExternalService,
                           target: EgressTarget, contexts: OriginationContexts,
                           timeout: float) -> tuple[Stream, bytes]:
    """Connect to `target` with TLS; return the server stream and the bytes to send on it first.

    `down` is the application-facing stream and `first` what was read from it already.
    """
    postgres = entry.protocol_hint == "postgres"
    if postgres:
        first = await _pg_client_side(down, first)
    sock, shown = await dial_first(loop, target.addresses, timeout)
    up = Stream(loop, sock, shown)
    try:
        if postgres:
            await _pg_server_side(up, timeout)
        await _tls_to_server(up, target, contexts)
    except BaseException:
        up.close()
        raise
    return up, first
