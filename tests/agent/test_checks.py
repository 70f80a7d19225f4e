"""Health checks run by the agent against real listeners."""

from __future__ import annotations

import asyncio




async def status_of(api, check_id):
    return (await api.get("/v1/agent/checks")).json()[check_id]["Status"]


async def until(api, check_id, status, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while (current := await status_of(api, check_id)) != status:
        assert asyncio.get_running_loop().time() < deadline, f"{check_id} stayed {current}, wanted {status}"
        await asyncio.sleep(0.05)


async def listener():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_tcp_check_follows_the_listener(api):
    server, port = await listener()
    await api.put("/v1/agent/service/register",
                  json={"Name": "db", "Port": port, "Check": {"TCP": f"127.0.0.1:{port}", "Interval": "100ms"}})
    await until(api, "service:db", "passing")
    server.close()
    await server.wait_closed()
    await until(api, "service:db", "critical")


async def test_http_check_maps_status_codes(api):
    codes = {"code": 200}

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        code = codes["code"]
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await api.put("/v1/agent/service/register", json={
        "name": "web", "port": port,
        "check": {"http": f"http://127.0.0.1:{port}/health", "interval": "100ms", "timeout": "1s"}})
    await until(api, "service:web", "passing")
    codes["code"] = 429
    await until(api, "service:web", "warning")
    codes["code"] = 500
    await until(api, "service:web", "critical")
    server.close()


async def test_ttl_check_expires_to_critical(api):
    await api.put("/v1/agent/service/register", json={"Name": "job", "Check": {"TTL": "300ms"}})
    await api.put("/v1/agent/check/pass/service:job")
    assert await status_of(api, "service:job") == "passing"
    await until(api, "service:job", "critical", timeout=5)
    output = (await api.get("/v1/agent/checks")).json()["service:job"]["Output"]
    assert "TTL expired" in output


async def test_sidecar_is_healthy_only_with_parent_and_listener(api):
    await api.put("/v1/agent/service/register", json={
        "name": "web", "port": 8080, "check": {"ttl": "60s"},
        "connect": {"sidecar_service": {"port": 0}}})
    sidecar = (await api.get("/v1/agent/service/web-sidecar-proxy")).json()
    checks = {c["Name"]: c for c in (await api.get("/v1/agent/checks")).json().values()
              if c["ServiceID"] == "web-sidecar-proxy"}
    assert set(checks) == {"Connect Sidecar Listening", "Connect Sidecar Aliasing web"}

    async def passing_proxies():
        r = await api.get("/v1/health/connect/web", params={"passing": "1"})
        return [e["Service"]["ID"] for e in r.json()]

    # Re-register the sidecar on a port we listen on, with a fast TCP check.
    server, port = await listener()
    await api.put("/v1/agent/service/register", json={
        "name": "web", "port": 8080, "check": {"ttl": "60s"},
        "connect": {"sidecar_service": {"port": port, "checks": [
            {"name": "listening", "tcp": f"127.0.0.1:{port}", "interval": "100ms"},
            {"name": "parent", "alias_service": "web"}]}}})
    assert sidecar["Port"] != 0
    await until(api, "service:web-sidecar-proxy:1", "passing")
    assert await passing_proxies() == []  # the parent is still critical
    await api.put("/v1/agent/check/pass/service:web")
    assert await passing_proxies() == ["web-sidecar-proxy"]
    server.close()
    await server.wait_closed()
    await until(api, "service:web-sidecar-proxy:1", "critical")
    assert await passing_proxies() == []


async def test_reregistration_keeps_sidecar_port(api):
    body = {"name": "web", "port": 8080, "connect": {"sidecar_service": {}}}
    await api.put("/v1/agent/service/register", json=body)
    first = (await api.get("/v1/agent/service/web-sidecar-proxy")).json()["Port"]
    await api.put("/v1/agent/service/register", json={"name": "other", "connect": {"sidecar_service": {}}})
    await api.put("/v1/agent/service/register", json={**body, "tags": ["v2"]})
    assert (await api.get("/v1/agent/service/web-sidecar-proxy")).json()["Port"] == first
    await api.put("/v1/agent/service/register", json={"name": "web", "port": 8080})  # sidecar dropped
    assert (await api.get("/v1/agent/service/web-sidecar-proxy")).status_code == 404
