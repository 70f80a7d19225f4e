"""Fail static (issue 5, "Bad input and faults"): with the agent gone, running sidecars keep
serving with the identity, policy and instances they last had, say so once in their log and
in /metrics; when the agent is back they follow it again (a new intention applies)."""

from __future__ import annotations

import httpx

from proxy_kit import (
    EchoServer, free_port, metric_value, metrics, open_stream, roundtrip, start_agent_on, start_proxy, still_open,
    stop_proxy, wait_for,
)


def _stale(admin: str) -> float:
    return metric_value(metrics(admin), "tether_proxy_config_stale")


def test_sidecars_keep_serving_while_the_agent_is_down_and_recover(tmp_path):
    port = free_port()
    agent = start_agent_on(port, str(tmp_path / "data"))
    app = EchoServer()
    procs = []
    try:
        api = httpx.Client(base_url=agent.url, timeout=30)
        store_port, up = free_port(), free_port()
        api.put("/v1/agent/service/register", json={"name": "store", "port": app.port, "connect": {"sidecar_service": {
            "port": store_port, "checks": [{"tcp": f"127.0.0.1:{store_port}", "interval": "300ms"}]}}}).raise_for_status()
        api.put("/v1/agent/service/register", json={"name": "cashier", "port": 1, "connect": {"sidecar_service": {
            "port": free_port(), "proxy": {"upstreams": [{"destination_name": "store", "local_bind_port": up}]}}}}).raise_for_status()
        store, _, store_log = start_proxy("-sidecar-for", "store", addr=agent.addr)
        cashier, ready, cashier_log = start_proxy("-sidecar-for", "cashier", addr=agent.addr)
        procs += [store, cashier]
        wait_for("store to be healthy", lambda: api.get("/v1/health/connect/store", params={"passing": 1}).json())
        assert wait_for("traffic", lambda: roundtrip(up, b"before") == b"before")
        held = open_stream(up)

        agent.stop()
        wait_for("the proxy to notice the agent is gone", lambda: _stale(ready["admin"]) == 1)
        assert still_open(held)  # open connections are untouched ...
        assert roundtrip(up, b"during") == b"during"  # ... and new ones use the last known config
        assert sum("serving last known config" in line for line in cashier_log) == 1  # said once

        agent = start_agent_on(port, str(tmp_path / "data"))
        api = httpx.Client(base_url=agent.url, timeout=30)
        wait_for("the proxy to follow the agent again", lambda: _stale(ready["admin"]) == 0)
        api.put("/v1/connect/intentions/exact", params={"source": "cashier", "destination": "store"},
                json={"Action": "deny"}).raise_for_status()
        wait_for("the new intention to apply", lambda: not still_open(held))
        assert roundtrip(up, b"after") == b""
        assert any("reachable again" in line for line in cashier_log)
        assert any("reachable again" in line for line in store_log)
    finally:
        for proc in procs:
            stop_proxy(proc)
        agent.stop()
        app.close()
