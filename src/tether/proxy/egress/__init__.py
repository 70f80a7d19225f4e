"""Egress in the data plane: the transparent outbound listener and the egress gateway.

Public API:

    EgressProxy(material, service=..., snapshot=..., mesh=[MeshService...], access_log=..., log_format=...)
      await open_outbound(host, port)   # sidecar: iptables-redirected TCP, SO_ORIGINAL_DST
      await open_gateway(host, port)    # `tether proxy -gateway egress`
      await open_admin(host, port)      # /metrics, /ready
      update_tls / update_registry / update_mesh; await drain(timeout) / await close()
    MeshService(name, spiffe_id, instances, virtual_ip)
    load_egress_config(path) -> EgressConfig         # static JSON config (tests, bench, hand-run)
    AgentFeed(http_addr, service, ...)               # the same state from the local agent

Module map: proxy (listeners, per-connection setup task, hand-over to the splice),
outbound / gateway (the two setup flows), peek (ClientHello peek), preamble (the line a
sidecar sends its gateway), origin (TLS origination, PostgreSQL SSLRequest dance),
routes (mesh services, virtual IPs, pools, mTLS dial), stream (setup I/O), splice (the
hot path), session (access-log record), stats (metrics), config (static file), agent
(agent-fed state), run (the process: `python -m tether.proxy.egress`).
"""

from tether.proxy.egress.proxy import EgressProxy
from tether.proxy.egress.routes import MeshService

__all__ = ["EgressProxy", "MeshService"]
