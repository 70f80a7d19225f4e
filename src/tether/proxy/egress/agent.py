"""Agent-fed state for an egress proxy: leaf, roots, registry, virtual IPs, instances.

Each input is one blocking query on the local agent (`?index=N&wait=5m`), re-issued as
soon as it answers, so a change reaches the proxy within milliseconds:

    /v1/agent/connect/ca/leaf/<service>   our certificate and key (renewed by the agent)
    /v1/agent/connect/ca/roots            trust anchors and the trust domain
    /v1/tether/egress                     external services + outbound policy
    /v1/tether/virtual-ips                service -> virtual IP (sidecars only)
    /v1/health/connect/<service>?passing  healthy instances of every gateway named by the
                                          registry and (sidecars) every service with a VIP

Fail static: when the agent is unreachable or answers garbage, the proxy keeps what it
has; the failure is logged once per outage and retried with capped back-off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from tether.core.errors import TetherError
from tether.core.external import EgressSnapshot, OutboundPolicy
from tether.core.external_yaml import parse_external_documents
from tether.proxy.egress.routes import MeshService
from tether.proxy.pool import Instance
from tether.proxy.tls import TlsMaterial
from tether.sdk.addr import resolve_addr

log = logging.getLogger("tether.proxy.egress")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per blocking query is noise

WAIT = "5m"
#: Read timeout: the longest blocking wait plus the server's jitter (wait/16) and slack.
READ_TIMEOUT = 330.0
RETRY_FIRST, RETRY_MAX = 0.5, 30.0


class AgentFeed:
    """Keeps an EgressProxy's inputs current from the agent at `http_addr`."""

    def __init__(self, http_addr: str | None, service: str, *, token: str | None = None,
                 virtual_ips: bool = True) -> None:
        headers = {"X-Consul-Token": token} if token else {}
        self.http = httpx.AsyncClient(base_url=resolve_addr(http_addr), headers=headers,
                                      timeout=httpx.Timeout(READ_TIMEOUT, connect=5.0))
        self.service = service
        self.want_vips = virtual_ips
        self.px = None
        self.leaf: dict[str, Any] | None = None
        self.roots: dict[str, Any] | None = None
        self.snapshot: EgressSnapshot | None = None
        self.vips: dict[str, str] = {}
        self.instances: dict[str, tuple[Instance, ...]] = {}
        self.datacenters: dict[str, str] = {}  # service -> the datacenter its instances report
        self.tasks: dict[str, asyncio.Task] = {}
        self.ready = asyncio.Event()
        self._failing: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, timeout: float = 30.0) -> None:
        """Start the watches; return once leaf, roots and registry have all arrived."""
        self._spawn("leaf", self._watch(f"/v1/agent/connect/ca/leaf/{self.service}", self._on_leaf))
        self._spawn("roots", self._watch("/v1/agent/connect/ca/roots", self._on_roots))
        self._spawn("egress", self._watch("/v1/tether/egress", self._on_egress))
        if self.want_vips:
            self._spawn("vips", self._watch("/v1/tether/virtual-ips", self._on_vips))
        await asyncio.wait_for(self.ready.wait(), timeout)

    def material(self) -> TlsMaterial:
        roots = tuple(r["RootCert"] for r in self.roots["Roots"])
        return TlsMaterial(self.leaf["CertPEM"], self.leaf["PrivateKeyPEM"], roots, self.leaf["ServiceURI"])

    def mesh(self) -> list[MeshService]:
        td = self.roots.get("TrustDomain", "") if self.roots else ""
        return [MeshService(name, f"spiffe://{td}/ns/default/dc/{self._dc(name)}/svc/{name}",
                            self.instances.get(name, ()), self.vips.get(name)) for name in sorted(self._wanted())]

    def attach(self, px) -> None:
        """From now on, every change is applied to `px` as it arrives."""
        self.px = px

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.http.aclose()

    # ------------------------------------------------------------------ watches
    def _spawn(self, key: str, coro) -> None:
        self.tasks[key] = asyncio.get_running_loop().create_task(coro)

    async def _watch(self, path: str, apply, params: dict[str, str] | None = None) -> None:
        index, delay = 0, RETRY_FIRST
        while True:
            try:
                resp = await self.http.get(path, params={**(params or {}), "index": str(index), "wait": WAIT})
                resp.raise_for_status()
                new_index = int(resp.headers.get("X-Consul-Index", "0"))
                if new_index != index or index == 0:
                    apply(resp.json())
                # An index that went backwards (store restored) restarts from the top.
                index = new_index if new_index >= index else 0
                delay = RETRY_FIRST
                if path in self._failing:
                    self._failing.discard(path)
                    log.info("agent watch %s recovered", path)
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ValueError, KeyError, TetherError) as e:
                if path not in self._failing:
                    self._failing.add(path)
                    log.warning("agent watch %s failed (%s); keeping the last known state", path, e)
                await asyncio.sleep(delay)  # back-off between retries of a failed watch
                delay = min(RETRY_MAX, delay * 2)

    def _on_leaf(self, doc: dict) -> None:
        self.leaf = doc
        self._push_tls()

    def _on_roots(self, doc: dict) -> None:
        self.roots = doc
        self._push_tls()
        self._push_mesh()

    def _on_egress(self, doc: dict) -> None:
        # Stored documents carry their store index beside the Tether document itself.
        services = [{k: v for k, v in d.items() if k not in ("ModifyIndex", "CreateIndex")}
                    for d in doc.get("Services") or []]
        docs = services + ([doc["Policy"]] if doc.get("Policy") else [])
        cfg = parse_external_documents(docs, source="agent /v1/tether/egress")
        self.snapshot = EgressSnapshot.build(cfg.services, cfg.policy or OutboundPolicy())
        if self.px is not None:
            self.px.update_registry(self.snapshot)
        self._sync_service_watches()
        self._check_ready()

    def _on_vips(self, doc: dict) -> None:
        self.vips = {str(k): str(v) for k, v in doc.items()}
        self._sync_service_watches()
        self._push_mesh()

    def _on_instances(self, name: str, doc: list) -> None:
        found = []
        for e in doc[:1]:
            self.datacenters[name] = e["Node"].get("Datacenter") or "dc1"
        for e in doc:
            svc = e["Service"]
            found.append(Instance(svc.get("Address") or e["Node"]["Address"], int(svc["Port"])))
        self.instances[name] = tuple(found)
        self._push_mesh()

    def _dc(self, name: str) -> str:
        return self.datacenters.get(name, "dc1")

    def _wanted(self) -> set[str]:
        names = {s.egress_gateway for s in self.snapshot.services if s.egress_gateway} if self.snapshot else set()
        return names | set(self.vips)

    def _sync_service_watches(self) -> None:
        wanted = self._wanted()
        for name in wanted:
            key = f"health:{name}"
            if key not in self.tasks:
                self._spawn(key, self._watch(f"/v1/health/connect/{name}",
                                             lambda doc, n=name: self._on_instances(n, doc), {"passing": "1"}))
        for key in [k for k in self.tasks if k.startswith("health:") and k[7:] not in wanted]:
            self.tasks.pop(key).cancel()
            self.instances.pop(key[7:], None)
        self._push_mesh()

    # ------------------------------------------------------------------ pushing to the proxy
    def _push_tls(self) -> None:
        if self.leaf is None or self.roots is None:
            return
        if self.px is not None:
            try:
                self.px.update_tls(self.material())
            except TetherError as e:
                log.error("new TLS material refused (%s); keeping the current one", e)
        self._check_ready()

    def _push_mesh(self) -> None:
        if self.px is not None and self.roots is not None:
            self.px.update_mesh(self.mesh())

    def _check_ready(self) -> None:
        if self.leaf is not None and self.roots is not None and self.snapshot is not None:
            self.ready.set()
