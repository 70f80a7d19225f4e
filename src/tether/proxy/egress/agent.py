"""Agent-fed state for an egress proxy: leaf, roots, registry, virtual IPs, instances.

Each input is one blocking query on the local agent, followed with the sidecar's own
watch loops (proxy/watch.py over the lean proxy/agentclient.py, so the proxy process
loads no httpx), and applied to the proxy as soon as it changes:

    /v1/agent/connect/ca/leaf/<service>   our certificate and key (renewed by the agent)
    /v1/agent/connect/ca/roots            trust anchors and the trust domain
    /v1/tether/egress                     external services + outbound policy
    /v1/tether/virtual-ips                service -> virtual IP (sidecars only)
    /v1/health/connect/<service>?passing  healthy instances of every gateway the registry
                                          names and (sidecars) of every service with a VIP

Fail static: when the agent is unreachable or answers something unusable, the proxy keeps
what it has; the loss and the recovery are logged once each.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from tether.core.external import EgressSnapshot, OutboundPolicy
from tether.core.external_yaml import parse_external_documents
from tether.proxy.agentclient import AgentClient
from tether.proxy.egress.routes import MeshService
from tether.proxy.pool import Instance
from tether.proxy.tls import TlsMaterial
from tether.proxy.watch import SourceHealth, watch_index

log = logging.getLogger("tether.proxy.egress")


def agent_addr(flag: str | None) -> str:
    """The flag, else $TETHER_HTTP_ADDR, else $CONSUL_HTTP_ADDR, else 127.0.0.1:8500 (as the
    CLI does; tether.sdk is not imported because it loads httpx into the proxy process)."""
    return flag or os.environ.get("TETHER_HTTP_ADDR") or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"


class AgentFeed:
    """Keeps an EgressProxy's inputs current from the agent at `http_addr`."""

    def __init__(self, http_addr: str | None, service: str, *, token: str | None = None,
                 virtual_ips: bool = True) -> None:
        self.client = AgentClient(agent_addr(http_addr), token)
        self.health = SourceHealth(f"agent at {self.client.addr}", self._lost, self._regained)
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
        self._down = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, timeout: float = 30.0) -> None:
        """Start the watches; return once leaf, roots and registry have all arrived."""
        self._spawn("leaf", f"/v1/agent/connect/ca/leaf/{self.service}", self._on_leaf)
        self._spawn("roots", "/v1/agent/connect/ca/roots", self._on_roots)
        self._spawn("egress", "/v1/tether/egress", self._on_egress)
        if self.want_vips:
            self._spawn("virtual-ips", "/v1/tether/virtual-ips", self._on_vips)
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            failing = "; ".join(f"{w}: {e}" for w, e in self.health.failing.items()) or "no answer"
            raise TimeoutError(f"egress state from the agent at {self.client.addr} not complete after "
                               f"{timeout:g}s ({failing})") from None

    def material(self) -> TlsMaterial:
        roots = tuple(r["RootCert"] for r in self.roots["Roots"])
        return TlsMaterial(self.leaf["CertPEM"], self.leaf["PrivateKeyPEM"], roots, self.leaf["ServiceURI"])

    def mesh(self) -> list[MeshService]:
        td = self.roots.get("TrustDomain", "") if self.roots else ""
        return [MeshService(name, f"spiffe://{td}/ns/default/dc/{self.datacenters.get(name, 'dc1')}/svc/{name}",
                            self.instances.get(name, ()), self.vips.get(name)) for name in sorted(self._wanted())]

    def attach(self, px) -> None:
        """From now on, every change is applied to `px` as it arrives."""
        self.px = px

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # ------------------------------------------------------------------ watches
    def _spawn(self, key: str, path: str, apply, params: dict[str, str] | None = None) -> None:
        coro = watch_index(self.client, self.health, key, path, apply, params=params)
        self.tasks[key] = asyncio.get_running_loop().create_task(coro)

    def _lost(self, source: str, error: str) -> None:
        if not self._down:
            self._down = True
            log.warning("%s unreachable (%s); egress keeps its last known state", source, error)

    def _regained(self, source: str) -> None:
        self._down = False
        log.info("%s reachable again; egress state is current", source)

    def _on_leaf(self, doc: dict) -> None:
        self.leaf = doc
        self._push_tls()

    def _on_roots(self, doc: dict) -> None:
        self.roots = doc
        self._push_tls()
        self._push_mesh()

    def _on_egress(self, doc: dict) -> None:
        docs = list(doc.get("Services") or []) + ([doc["Policy"]] if doc.get("Policy") else [])
        cfg = parse_external_documents(docs, source="the agent's /v1/tether/egress")
        self.snapshot = EgressSnapshot.build(cfg.services, cfg.policy or OutboundPolicy())
        if self.px is not None:
            self.px.update_registry(self.snapshot)
        log.info("egress registry: %d external service(s), outbound mode %s", len(cfg.services),
                 self.snapshot.policy.mode)
        self._sync_service_watches()
        self._check_ready()

    def _on_vips(self, doc: dict) -> None:
        self.vips = {str(k): str(v) for k, v in doc.items()}
        self._sync_service_watches()

    def _on_instances(self, name: str, doc: list) -> None:
        for e in doc[:1]:
            self.datacenters[name] = e["Node"].get("Datacenter") or "dc1"
        self.instances[name] = tuple(Instance(e["Service"].get("Address") or e["Node"]["Address"],
                                              int(e["Service"]["Port"])) for e in doc)
        self._push_mesh()

    def _wanted(self) -> set[str]:
        gateways = {s.egress_gateway for s in self.snapshot.services if s.egress_gateway} if self.snapshot else set()
        return gateways | set(self.vips)

    def _sync_service_watches(self) -> None:
        wanted = self._wanted()
        for name in wanted:
            if f"health:{name}" not in self.tasks:
                self._spawn(f"health:{name}", f"/v1/health/connect/{name}",
                            lambda doc, n=name: self._on_instances(n, doc), {"passing": "1"})
        for key in [k for k in self.tasks if k.startswith("health:") and k[7:] not in wanted]:
            self.tasks.pop(key).cancel()
            self.instances.pop(key[7:], None)
        self._push_mesh()

    # ------------------------------------------------------------------ pushing to the proxy
    def _push_tls(self) -> None:
        if self.leaf is None or self.roots is None:
            return
        if self.px is not None:
            self.px.update_tls(self.material())  # InvalidInput: watch_index logs it, the old one stays
        self._check_ready()

    def _push_mesh(self) -> None:
        if self.px is not None and self.roots is not None:
            self.px.update_mesh(self.mesh())

    def _check_ready(self) -> None:
        if self.leaf is not None and self.roots is not None and self.snapshot is not None:
            self.ready.set()
