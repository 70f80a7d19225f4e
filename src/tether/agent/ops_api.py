"""The agent's operational routes: maintenance mode, config reload and metrics.

- `PUT /v1/agent/maintenance?enable=&reason=` (node:write on this node) and
  `PUT /v1/agent/service/maintenance/:id?enable=&reason=` (service:write): Consul's
  maintenance checks (core/maintenance.py).
- `PUT /v1/agent/reload` (agent:write): what SIGHUP does; 500 with the reason when a config
  file no longer parses (the running configuration stays).
- `GET /v1/agent/metrics[?format=prometheus]` (agent:read): the agent's gauges in Consul's
  JSON shape (`Timestamp`, `Gauges`, `Points`, `Counters`, `Samples`) or Prometheus text.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any, Awaitable, Callable

from fastapi import APIRouter, Depends, Request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.responses import Response

from tether.agent.agent import Agent
from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency, json_response
from tether.core.errors import NotFound
from tether.core.health import STATUSES
from tether.core.maintenance import NODE_MAINTENANCE, SERVICE_MAINTENANCE_PREFIX, node_maintenance_check, \
    parse_enable, service_maintenance_check

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def ops_router(agent: Agent, reload: Callable[[], Awaitable[None]] | None,
               store_revision: Callable[[], int] | None = None) -> APIRouter:
    """`reload`: re-read the config files, raising TetherError when they do not parse (None:
    nothing to reload). `store_revision`: the server's store revision, when this is a server."""
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])
    node = agent.config.node

    async def drop(check_id: str) -> None:
        try:
            await agent.deregister_check(check_id)
        except NotFound:
            pass  # not in maintenance: disabling changes nothing, as in Consul

    @r.put("/v1/agent/maintenance", tags=["agent"], **needs("node:write", on="this node"))
    async def node_maintenance(request: Request) -> Response:
        request_acl(request).require("node", node, "write")
        if parse_enable(request.query_params.get("enable")):
            await agent.set_passive_check(node_maintenance_check(node, request.query_params.get("reason", "")))
        else:
            await drop(NODE_MAINTENANCE)
        return Response(status_code=200)

    @r.put("/v1/agent/service/maintenance/{service_id}", tags=["agent"], **needs("service:write", on="the service"))
    async def service_maintenance(request: Request, service_id: str) -> Response:
        svc = agent.services.get(service_id)
        if svc is None:
            raise NotFound(f'Unknown service ID "{service_id}"')
        request_acl(request).require("service", svc["Service"], "write")
        if parse_enable(request.query_params.get("enable")):
            await agent.set_passive_check(service_maintenance_check(node, svc, request.query_params.get("reason", "")))
        else:
            await drop(SERVICE_MAINTENANCE_PREFIX + service_id)
        return Response(status_code=200)

    @r.put("/v1/agent/reload", tags=["agent"], **needs("agent:write", on="this node"))
    async def agent_reload(request: Request) -> Response:
        request_acl(request).require("agent", node, "write")
        if reload is not None:
            await reload()
        return Response(status_code=200)

    @r.get("/v1/agent/metrics", tags=["agent"], **needs("agent:read", on="this node"))
    async def agent_metrics(request: Request) -> Response:
        request_acl(request).require("agent", node, "read")
        gauges = _gauges(agent, store_revision)
        if request.query_params.get("format") == "prometheus":
            return Response(_prometheus(gauges), media_type=PROMETHEUS_TEXT)
        now = datetime.datetime.now(datetime.timezone.utc)
        return json_response({"Timestamp": now.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"), "Gauges": gauges,
                              "Points": [], "Counters": [], "Samples": []})

    return r


def _gauges(agent: Agent, store_revision: Callable[[], int] | None) -> list[dict[str, Any]]:
    """What the agent can say of itself now: its services, its checks by status, and so on."""
    checks = list(agent.checks.values())
    out = [{"Name": "tether.agent.services", "Value": float(len(agent.services)), "Labels": {}}]
    out += [{"Name": "tether.agent.checks", "Value": float(sum(c["Status"] == s for c in checks)),
             "Labels": {"status": s}} for s in STATUSES]
    out.append({"Name": "tether.runtime.threads", "Value": float(threading.active_count()), "Labels": {}})
    if store_revision is not None:
        out.append({"Name": "tether.store.revision", "Value": float(store_revision()), "Labels": {}})
    return out


def _prometheus(gauges: list[dict[str, Any]]) -> bytes:
    registry = CollectorRegistry()

    class Collector:
        def collect(self) -> Any:
            families: dict[str, GaugeMetricFamily] = {}
            for g in gauges:
                name = g["Name"].replace(".", "_")
                family = families.setdefault(name, GaugeMetricFamily(name, g["Name"], labels=sorted(g["Labels"])))
                family.add_metric([g["Labels"][k] for k in sorted(g["Labels"])], g["Value"])
            return list(families.values())

    registry.register(Collector())
    return generate_latest(registry)
