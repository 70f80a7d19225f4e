"""The agent's authorization cache: a write on the server changes `agent.authz.decide`, in dev
mode and with a `tether server` + agent pair over HTTP; fail static when the server goes away;
the blocking authz-snapshot endpoint builds the same snapshot out of process."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from tether import daemon
from tether.core.authz import Source, decide
from tether.core.intentions import Intention
from tether.core.policy_yaml import snapshot_from_state
from tether.core.spiffe import SpiffeId
from tether.testing.agent import open_in_process, serve_in_process, until_parked


async def until(predicate, timeout: float = 10.0) -> None:
    """Poll `predicate` with a deadline (the change arrives through a watch, not a call we await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


def caller(agent, service: str) -> Source:
    return Source(SpiffeId(agent.authz.trust_domain, "default", "dc1", service), "10.0.0.1")


@contextlib.asynccontextmanager
async def runtime(**options):
    async with daemon.open_runtime(daemon.Options(http_port=0, managed_proxies=False, **options)) as app:
        yield app


async def test_dev_agent_sees_a_server_write_through_its_cache():
    async with runtime(role="dev", node="n1") as app:
        agent, cp = app.state.agent, app.state.control_plane
        web = caller(agent, "web")
        assert agent.authz.trust_domain == f"{agent.cluster['ClusterID']}.tether"
        assert agent.authz.decide(web, "db", 5432).allowed  # dev default: allow
        created = await cp.intentions.create(Intention("web", "db", "deny"))
        await until(lambda: not agent.authz.decide(web, "db", 5432).allowed)
        decision = agent.authz.decide(web, "db", 5432)
        assert decision.rule.id == created.id and "web -> db (deny" in decision.reason
        before = agent.authz.snapshot
        await cp.intentions.delete(created.id)
        await until(lambda: agent.authz.decide(web, "db", 5432).allowed)
        assert agent.authz.snapshot is not before  # swapped, never mutated
        assert before.index < agent.authz.index


async def test_server_and_agent_pair_propagation_and_fail_static(tmp_path):
    server = serve_in_process("server", data_dir=tmp_path / "server")
    url = await server.__aenter__()
    stopped = False
    try:
        async with runtime(role="agent", server_addr=url, node="a1") as app:
            agent = app.state.agent
            web = caller(agent, "web")
            assert not agent.authz.decide(web, "db", 80).allowed  # `tether server` default: deny
            async with httpx.AsyncClient(base_url=url, timeout=30) as api:
                r = await api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"},
                                  json={"Action": "allow"})
                assert r.status_code == 200
            await until(lambda: agent.authz.decide(web, "db", 80).allowed)
            # The server goes away: the agent keeps deciding from its last snapshot.
            await server.__aexit__(None, None, None)
            stopped = True
            await until(lambda: agent.authz.failing)
            assert agent.authz.decide(web, "db", 80).allowed
            assert not agent.authz.decide(caller(agent, "api"), "db", 80).allowed
    finally:
        if not stopped:
            await server.__aexit__(None, None, None)


async def test_authz_snapshot_endpoint_blocks_and_rebuilds_the_same_decisions():
    async with open_in_process("dev", node="n1") as node, httpx.AsyncClient(base_url=node.url, timeout=30) as api:
        first = await api.get("/v1/agent/connect/authz-snapshot")
        index = first.headers["X-Consul-Index"]
        watch = asyncio.create_task(api.get("/v1/agent/connect/authz-snapshot", params={"index": index, "wait": "20s"}))
        await until_parked(lambda: node.agent.authz.parked)
        assert not watch.done()
        await api.put("/v1/connect/intentions/exact", params={"source": "*", "destination": "db"}, json={"Action": "deny"})
        r = await asyncio.wait_for(watch, 10)
        assert int(r.headers["X-Consul-Index"]) > int(index)
        state = r.json()
        snap = snapshot_from_state(state, state["TrustDomain"])
        web = Source(SpiffeId(state["TrustDomain"], "default", "dc1", "web"))
        assert not decide(snap, web, "db", None).allowed and decide(snap, web, "cache", None).allowed
        authorized = await api.post("/v1/agent/connect/authorize",
                                    json={"Target": "db", "ClientCertURI": str(web.identity), "ClientCertSerial": "01"})
        assert authorized.json() == {"Authorized": False, "Reason": decide(snap, web, "db", None).reason}
