"""The agent's DNS interface, queried over real UDP with dnslib's client."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tether.core.dnsname import Question, parse_query_name
from tether.testing.agent import serve_in_process


@pytest.mark.parametrize("name, expected", [
    ("web.service.tether.", Question("service", "web")),
    ("WEB.service.consul", Question("service", "web")),
    ("v2.web.service.dc1.tether", Question("service", "web", tag="v2", datacenter="dc1")),
    ("_web._tcp.service.tether", Question("service", "web", srv_form=True)),
    ("_web._v2.tether", Question("service", "web", tag="v2", srv_form=True)),
    ("db.connect.tether", Question("connect", "db")),
    ("db.virtual.tether", Question("virtual", "db")),
    ("node1.node.tether", Question("node", "node1")),
    ("example.com", None),
    ("web.tether", None),
    ("a.b.c.service.tether", None),
    ("db.virtual.dc1.tether", None),
])
def test_query_names(name, expected):
    assert parse_query_name(name) == expected


@pytest.fixture
async def agent():
    async with serve_in_process("dev", node="n1", dns_port=0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as api:
            dns = (await api.get("/v1/agent/self")).json()["Config"]["DNSAddr"]
            yield api, dns


async def ask(dns: str, name: str, qtype: str = "A") -> DNSRecord:
    host, port = dns.rsplit(":", 1)
    raw = await asyncio.to_thread(DNSRecord.question(name, qtype).send, host, int(port), timeout=5)
    return DNSRecord.parse(raw)


async def test_service_connect_virtual_and_node_records(agent):
    api, dns = agent
    for i, address in enumerate(["192.0.2.1", "192.0.2.2"]):
        await api.put("/v1/agent/service/register", json={
            "Name": "db", "ID": f"db-{i}", "Address": address, "Port": 5432, "Tags": [f"t{i}"],
            "Check": {"TTL": "1h", "Status": "passing"}, "Connect": {"SidecarService": {}}})
    await api.put("/v1/agent/service/register", json={"Name": "sick", "Address": "192.0.2.9", "Check": {"TTL": "1h"}})

    reply = await ask(dns, "db.service.tether")
    assert sorted(str(rr.rdata) for rr in reply.rr) == ["192.0.2.1", "192.0.2.2"]
    assert all(rr.ttl == 0 for rr in reply.rr)
    assert [str(rr.rdata) for rr in (await ask(dns, "t1.db.service.consul")).rr] == ["192.0.2.2"]
    srv = await ask(dns, "_db._tcp.service.tether", "SRV")
    assert sorted(rr.rdata.port for rr in srv.rr) == [5432, 5432]
    assert {str(rr.rdata) for rr in srv.ar} == {"192.0.2.1", "192.0.2.2"}  # addresses of the SRV targets

    # Unhealthy instances are left out; an unknown or foreign name is NXDOMAIN.
    assert (await ask(dns, "sick.service.tether")).header.rcode == RCODE.NXDOMAIN
    assert (await ask(dns, "www.example.com")).header.rcode == RCODE.NXDOMAIN
    assert (await ask(dns, "db.service.dc9.tether")).header.rcode == RCODE.NXDOMAIN

    vip = (await api.get("/v1/tether/virtual-ips")).json()["db"]
    assert [str(rr.rdata) for rr in (await ask(dns, "db.virtual.tether")).rr] == [vip]
    assert [str(rr.rdata) for rr in (await ask(dns, "n1.node.tether")).rr] == ["127.0.0.1"]
    # No sidecar has passed its listener check (no proxy runs here): no Connect endpoints yet.
    assert (await ask(dns, "db.connect.tether")).header.rcode == RCODE.NXDOMAIN
    # Once db-1's sidecar passes (as its proxy would), its address and port are the answer.
    sidecar = (await api.get("/v1/agent/service/db-1-sidecar-proxy")).json()
    checks = (await api.get("/v1/agent/checks")).json()
    listening = next(cid for cid, c in checks.items() if c["ServiceID"] == "db-1-sidecar-proxy" and c["Type"] == "ttl")
    assert (await api.put(f"/v1/agent/check/pass/{listening}")).status_code == 200
    assert [str(rr.rdata) for rr in (await ask(dns, "db.connect.tether")).rr] == ["192.0.2.2"]
    srv = await ask(dns, "db.connect.tether", "SRV")
    assert [rr.rdata.port for rr in srv.rr] == [sidecar["Port"]] and sidecar["Port"] != 5432


async def test_garbage_is_dropped_and_the_server_keeps_answering(agent):
    api, dns = agent
    host, port = dns.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(host, int(port)))
    for junk in (b"", b"\x00" * 3, b"\xff" * 600):
        transport.sendto(junk)
    transport.close()
    reply = await ask(dns, "nothing.service.tether")
    assert reply.header.rcode == RCODE.NXDOMAIN and QTYPE[reply.q.qtype] == "A"
