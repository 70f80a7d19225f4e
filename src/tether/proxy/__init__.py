"""Tether's data plane: the L4 mutual-TLS sidecar proxy engine.

Public API (everything else in this package is internal):

    Engine(material, authorize=..., access_log=..., log_format="json"|"text",
           handshake_timeout=10.0, idle_timeout=None)
      await open_inbound(InboundSpec) / open_upstream(UpstreamSpec, instances) / open_admin(host, port)
      update_tls(TlsMaterial) / update_upstream(name, instances) / update_authorizer(fn)
      close_upstream(name) / close_listener(listener)
      config_source_failed(source, error) / config_source_ok(source)
      await drain(timeout) / await close()
    TlsMaterial, InboundSpec, UpstreamSpec, Instance

Module map: engine (the API), listener (accept loop), inbound / upstream (per-connection
setup flows), conn (handshake + dial + finish), relay (the byte-moving hot path), tls
(material -> SSL contexts, failure names), der (URI SAN reader), pool (load balancing,
outlier detection), accesslog, metrics (+ admin endpoint), standalone (static-config process).
"""

from tether.proxy.engine import Engine
from tether.proxy.inbound import InboundSpec
from tether.proxy.pool import Instance
from tether.proxy.tls import TlsMaterial
from tether.proxy.upstream import UpstreamSpec

__all__ = ["Engine", "InboundSpec", "Instance", "TlsMaterial", "UpstreamSpec"]
