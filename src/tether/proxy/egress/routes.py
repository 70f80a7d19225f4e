"""Mesh destinations the egress proxy can reach: services by virtual IP, and egress gateways.

A sidecar's transparent listener sends a connection whose original destination is a
service's virtual IP (core/vip.py) to a healthy instance of that service over mutual
TLS, and an external connection whose entry names an `egressGateway` to an instance of
that gateway service. Both come from `MeshService` values (agent-fed or static config);
the proxy keeps one load-balancing `Pool` per service (proxy/pool.py: round robin and
passive outlier ejection, as the engine's upstreams do).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from time import monotonic
from typing import Iterable

from tether.core.errors import InvalidInput
from tether.proxy.der import parse_uri_sans
from tether.proxy.egress.stream import SetupError, Stream, dial
from tether.proxy.pool import Instance, Member, Pool

#: Instances tried per connection before giving up (the engine's upstream default).
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class MeshService:
    name: str
    spiffe_id: str  # what every instance must present (exact URI SAN match)
    instances: tuple[Instance, ...] = ()
    virtual_ip: str | None = None

    def problems(self) -> list[str]:
        out = []
        if not self.name:
            out.append("mesh service: name must not be empty")
        if not self.spiffe_id.startswith("spiffe://"):
            out.append(f"mesh service {self.name!r}: spiffe_id {self.spiffe_id!r} is not a spiffe:// URI")
        return out


class MeshRoutes:
    """Services by name and by virtual IP, each with its pool (counters kept across updates)."""

    def __init__(self) -> None:
        self.services: dict[str, MeshService] = {}
        self.by_vip: dict[str, str] = {}
        self.pools: dict[str, Pool] = {}

    def update(self, services: Iterable[MeshService]) -> None:
        services = list(services)
        problems = [p for s in services for p in s.problems()]
        if problems:
            raise InvalidInput("; ".join(problems))
        new = {s.name: s for s in services}
        for name, svc in new.items():
            pool = self.pools.get(name)
            if pool is None:
                self.pools[name] = Pool(svc.instances)
            else:
                pool.update(svc.instances)
        for gone in set(self.pools) - set(new):
            del self.pools[gone]
        self.services = new
        self.by_vip = {s.virtual_ip: s.name for s in services if s.virtual_ip}


async def open_mesh(loop, routes: MeshRoutes, name: str, client_ctx: ssl.SSLContext, sni: str | None,
                    connect_timeout: float) -> tuple[Stream, Pool, Member]:
    """Mutual TLS to a healthy instance of mesh service `name`, its identity checked exactly.

    Failed dials and handshakes count toward the instance's ejection and move on to the
    next instance; a wrong identity stops at once (a routing or security problem).
    """
    svc, pool = routes.services.get(name), routes.pools.get(name)
    if svc is None or pool is None or not len(pool):
        raise SetupError("upstream-connect-failure", f"no instances of mesh service {name!r} are known")
    tried: list[Member] = []
    errors: list[str] = []
    while len(tried) < MAX_ATTEMPTS:
        m = pool.pick(monotonic(), tried)
        if m is None:
            break
        tried.append(m)
        inst = m.instance
        try:
            sock = await dial(loop, inst.host, inst.port, connect_timeout)
        except OSError as e:
            errors.append(f"{inst.address}: {e.strerror or e}")
            pool.connect_failed(m, monotonic())
            continue
        st = Stream(loop, sock, inst.address)
        try:
            await st.start_tls(client_ctx, server_side=False, server_hostname=sni)
        except (ssl.SSLError, OSError) as e:
            st.close()
            errors.append(f"{inst.address}: mesh TLS: {getattr(e, 'reason', None) or e}")
            pool.connect_failed(m, monotonic())
            continue
        except BaseException:  # cancelled (setup timeout, shutdown): do not leak the socket
            st.close()
            raise
        expected = inst.spiffe_id or svc.spiffe_id
        try:
            uris = parse_uri_sans(st.obj.getpeercert(True) or b"")
        except ValueError:
            uris = ()
        if uris != (expected,):
            st.close()
            pool.connect_failed(m, monotonic())
            raise SetupError("upstream-identity-mismatch", f"{inst.address} presented "
                             f"{', '.join(uris) or 'no URI SAN'}; expected {expected}")
        pool.connect_ok(m)
        return st, pool, m
    raise SetupError("upstream-connect-failure", "; ".join(errors) or f"no instance of {name!r} to try")
