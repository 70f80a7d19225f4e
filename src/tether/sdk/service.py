"""The native integration: a Python service that speaks mesh TLS itself, without a proxy.

    from tether.sdk import Service

    web = Service("web")                      # leaf + roots from the local agent, kept current
    tls = web.connect("db")                   # a TLS socket verified to be db (blocking)
    reader, writer = await web.dial("db")     # the same for asyncio

    db = Service("db")
    ctx = db.server_ssl_context()             # accepts mesh clients (client certs required)
    decision = db.authorize(tls_socket)       # intentions/policy, decided by the local agent

A background thread keeps the leaf and roots current with blocking queries on the local
agent; contexts are rebuilt when they change, and a server context switches to the new
certificate for every new handshake (so rotation needs no restart). Fail static: when the
agent is unreachable, the last material keeps being used and the error is logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from tether.core.errors import PermissionDenied, Unavailable
from tether.core.spiffe import parse_spiffe_id
from tether.sdk.addr import resolve_addr, resolve_token
from tether.sdk.tls import Material, client_context, peer_serial, peer_spiffe_id, server_context

log = logging.getLogger("tether.sdk")

CONNECT_TIMEOUT = 5.0
WATCH_WAIT = "5m"
RETRY_DELAY = 1.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class Service:
    def __init__(self, name: str, *, agent_addr: str | None = None, token: str | None = None,
                 ready_timeout: float = 30.0) -> None:
        """`token`: an ACL token with service:write on `name` (default: TETHER_HTTP_TOKEN,
        CONSUL_HTTP_TOKEN or their _FILE forms; with ACLs on, a leaf needs it)."""
        self.name = name
        secret = resolve_token(token)
        self._http = httpx.Client(base_url=resolve_addr(agent_addr), timeout=httpx.Timeout(400.0, connect=5.0),
                                  headers={"X-Consul-Token": secret} if secret else {})
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._leaf: dict[str, Any] = {}
        self._roots: dict[str, Any] = {}
        self._refused: str | None = None  # the agent's 403, while we have no certificate yet
        self.material: Material | None = None
        self._client_ctx: ssl.SSLContext | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._threads = [threading.Thread(target=self._watch, args=(path, setter), daemon=True, name=f"tether-sdk {path}")
                         for path, setter in ((f"/v1/agent/connect/ca/leaf/{name}", self._set_leaf),
                                              ("/v1/agent/connect/ca/roots", self._set_roots))]
        for thread in self._threads:
            thread.start()
        if not self._ready.wait(ready_timeout):
            self._stopped.set()
            raise Unavailable(f"no certificate for {name!r} from the agent within {ready_timeout:.0f}s")
        if self._refused is not None:  # an ACL refusal: waiting longer would not help
            self._stopped.set()
            raise PermissionDenied(self._refused)
        # Our leaf names the datacenter and namespace (asking /v1/agent/self would need agent:read).
        own = parse_spiffe_id(self._leaf["ServiceURI"])
        self.datacenter, self.namespace = own.datacenter, own.namespace

    # -- keeping material current ----------------------------------------------------

    def _watch(self, path: str, setter: Any) -> None:
        index = 0
        while not self._stopped.is_set():
            try:
                response = self._http.get(path, params={"index": index, "wait": WATCH_WAIT} if index else None)
                if response.status_code == 403 and not self._ready.is_set():
                    self._refused = f"{path}: {response.text.strip()}"
                    self._ready.set()
                    return
                response.raise_for_status()
                new_index = int(response.headers.get("X-Consul-Index", "0"))
                index = new_index if new_index >= index else 0  # reset when it goes backwards
                setter(response.json())
            except (httpx.HTTPError, ValueError, RuntimeError) as exc:  # RuntimeError: closed meanwhile
                if self._stopped.is_set():
                    return
                log.warning("tether sdk: %s failed (keeping the last certificate): %s", path, exc)
                self._stopped.wait(RETRY_DELAY)

    def _set_leaf(self, leaf: dict[str, Any]) -> None:
        with self._lock:
            self._leaf = leaf
            self._rebuild()

    def _set_roots(self, roots: dict[str, Any]) -> None:
        with self._lock:
            self._roots = roots
            self._rebuild()

    def _rebuild(self) -> None:
        if not self._leaf or not self._roots:
            return
        material = Material(
            cert_chain_pem=self._leaf["CertPEM"], private_key_pem=self._leaf["PrivateKeyPEM"],
            roots_pem="".join(r["RootCert"] for r in self._roots["Roots"]),
            spiffe_id=self._leaf["ServiceURI"], trust_domain=self._roots["TrustDomain"],
            valid_before=self._leaf["ValidBefore"])
        if material == self.material:
            return
        self._client_ctx, self._server_ctx = client_context(material), server_context(material)
        self.material = material
        self._ready.set()

    def close(self) -> None:
        self._stopped.set()
        self._http.close()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server side -----------------------------------------------------------------

    def server_ssl_context(self) -> ssl.SSLContext:
        """A context for accepting mesh clients; new handshakes always use the newest leaf."""
        ctx = server_context(self.material)  # type: ignore[arg-type]

        def use_current(sslobj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sslobj.context = self._server_ctx

        ctx.sni_callback = use_current
        return ctx

    def authorize(self, peer: Any) -> Decision:
        """Ask the local agent whether the verified peer may connect to this service."""
        if self._stopped.is_set():
            raise Unavailable(f"Service({self.name!r}) is closed")
        uri = peer_spiffe_id(peer)
        if uri is None:
            return Decision(False, "the client presented no single SPIFFE URI SAN")
        response = self._http.post("/v1/agent/connect/authorize",
                                   json={"Target": self.name, "ClientCertURI": uri, "ClientCertSerial": peer_serial(peer)})
        response.raise_for_status()
        body = response.json()
        return Decision(bool(body["Authorized"]), body.get("Reason", ""))

    # -- client side -----------------------------------------------------------------

    def _target(self, service: str) -> tuple[str, str]:
        """(namespace, name) of `service`: Consul's `ns/name`, or a name in this service's own
        namespace (as Consul defaults an upstream's DestinationNamespace)."""
        ns, _, name = service.rpartition("/")
        return ns or self.namespace, name

    def expected_id(self, service: str) -> str:
        assert self.material is not None
        ns, name = self._target(service)
        return f"spiffe://{self.material.trust_domain}/ns/{ns}/dc/{self.datacenter}/svc/{name}"

    def endpoints(self, service: str) -> list[tuple[str, int]]:
        """Healthy Connect endpoints of `service` (`name` or `ns/name`: its proxies, or native instances)."""
        ns, name = self._target(service)
        entries = self._http.get(f"/v1/health/connect/{name}", params={"passing": "1", "ns": ns}).json()
        found = [(e["Service"]["Address"] or e["Node"]["Address"], e["Service"]["Port"]) for e in entries]
        random.shuffle(found)
        return found

    def _check_peer(self, peer: Any, service: str, address: tuple[str, int]) -> None:
        got, want = peer_spiffe_id(peer), self.expected_id(service)
        if got != want:
            raise PermissionDenied(f"{address[0]}:{address[1]} presented {got or 'no SPIFFE ID'}, not {want}")

    def connect(self, service: str, *, timeout: float = CONNECT_TIMEOUT) -> ssl.SSLSocket:
        """A blocking TLS socket to a healthy instance of `service`, verified to be it."""
        errors = []
        for address in self.endpoints(service):
            try:
                raw = socket.create_connection(address, timeout=timeout)
            except OSError as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            tls = self._client_ctx.wrap_socket(raw)  # type: ignore[union-attr]
            try:
                self._check_peer(tls, service, address)
            except PermissionDenied:
                tls.close()
                raise
            return tls
        raise Unavailable(f"no healthy instance of {service!r} could be reached" + (f": {'; '.join(errors)}" if errors else ""))

    async def dial(self, service: str, *, timeout: float = CONNECT_TIMEOUT) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The asyncio equivalent of connect()."""
        endpoints = await asyncio.to_thread(self.endpoints, service)
        errors = []
        for address in endpoints:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*address, ssl=self._client_ctx, server_hostname=None), timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc or 'timed out'}")
                continue
            try:
                self._check_peer(writer.get_extra_info("ssl_object"), service, address)
            except PermissionDenied:
                writer.close()
                raise
            return reader, writer
        raise Unavailable(f"no healthy instance of {service!r} could be reached" + (f": {'; '.join(errors)}" if errors else ""))

