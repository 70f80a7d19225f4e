"""Fail static (issue 5, "Bad input and faults"): with the agent gone, running sidecars keep
serving with the identity, policy and instances they last had, say so once in their log and
in /metrics; when the agent is back they follow it again (a new intention applies).

The mesh runs under a deny default with one allow, so "the policy they last had" is tested
both ways: a sidecar that failed open during the outage would let the denied caller in.
"""

from __future__ import annotations

import httpx

from proxy_kit import (
    EchoServer, metric_value, metrics, open_stream, roundtrip, start_agent_on, start_proxy, still_open, stop_proxy,
    wait_for,
)
from tether.testing.ports import held_port


def _stale(admin: str) -> float:
    return metric_value(metrics(admin), "tether_proxy_config_stale")


def _denied(log: list[str], source: str) -> int:
    return sum('"result":"denied"' in line and f"/svc/{source}\"" in line for line in log)


def test_sidecars_keep_serving_while_the_agent_is_down_and_recover(tmp_path):
    agent_port, up, intruder_up = held_port(), held_port(), held_port()
    agent = start_agent_on(agent_port.port, str(tmp_path / "data"))
    app = EchoServer()
    procs = []
    try:
        api = httpx.Client(base_url=agent.url, timeout=30)
        api.put("/v1/tether/mesh", json={"defaultIntention": "deny"}).raise_for_status()
        api.put("/v1/connect/intentions/exact", params={"source": "cashier", "destination": "store"},
                json={"Action": "allow"}).raise_for_status()
        api.put("/v1/agent/service/register", json={"name": "store", "port": app.port, "connect": {
            "sidecar_service": {}}}).raise_for_status()
        for name, port in (("cashier", up), ("intruder", intruder_up)):
            api.put("/v1/agent/service/register", json={"name": name, "port": 1, "connect": {"sidecar_service": {
                "proxy": {"upstreams": [{"destination_name": "store", "local_bind_port": port.port}]}}}}).raise_for_status()
        store, store_ready, store_log = start_proxy("-sidecar-for", "store", addr=agent.addr)
        cashier, ready, cashier_log = start_proxy("-sidecar-for", "cashier", addr=agent.addr)
        intruder, _, _ = start_proxy("-sidecar-for", "intruder", addr=agent.addr)
        procs += [store, cashier, intruder]
        wait_for("store to be healthy", lambda: api.get("/v1/health/connect/store", params={"passing": 1}).json())
        assert wait_for("traffic", lambda: roundtrip(up.port, b"before") == b"before")
        wait_for("the intruder to be denied", lambda: roundtrip(intruder_up.port, b"x") == b"" and _denied(store_log, "intruder"))
        held = open_stream(up.port)

        agent.stop()
        wait_for("the proxies to notice the agent is gone",
                 lambda: _stale(ready["admin"]) == 1 and _stale(store_ready["admin"]) == 1)
        assert still_open(held)  # open connections are untouched ...
        assert roundtrip(up.port, b"during") == b"during"  # ... new ones use the last known config ...
        denials, reached = _denied(store_log, "intruder"), app.accepted
        assert roundtrip(intruder_up.port, b"during") == b""  # ... and so do the denials
        wait_for("store's sidecar to log the denial", lambda: _denied(store_log, "intruder") > denials)
        assert app.accepted == reached  # the intruder never reached the application
        assert sum("serving last known config" in line for line in cashier_log) == 1  # said once

        agent = start_agent_on(agent_port.port, str(tmp_path / "data"))
        api = httpx.Client(base_url=agent.url, timeout=30)
        wait_for("the proxy to follow the agent again", lambda: _stale(ready["admin"]) == 0)
        api.put("/v1/connect/intentions/exact", params={"source": "cashier", "destination": "store"},
                json={"Action": "deny"}).raise_for_status()
        wait_for("the new intention to apply", lambda: not still_open(held))
        assert roundtrip(up.port, b"after") == b""
        assert any("reachable again" in line for line in cashier_log)
        assert any("reachable again" in line for line in store_log)
    finally:
        for proc in procs:
            stop_proxy(proc)
        agent.stop()
        app.close()
        for port in (agent_port, up, intruder_up):
            port.close()
