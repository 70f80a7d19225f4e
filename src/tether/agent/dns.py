"""The agent's DNS interface (UDP): service discovery and virtual IPs by name.

Answers come from the agent's own HTTP API (so a client node answers from the server's
catalog through its usual forwarding), with TTL 0 as Consul's default, randomised order,
at most UDP_ANSWER_LIMIT address records per answer (Consul's udp_answer_limit), and
NXDOMAIN for anything that is not ours: it never recurses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Any, Callable

import httpx
from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSLabel, DNSRecord

from tether.core.dnsname import Question, parse_query_name
from tether.netutil import bind_error, family_of

log = logging.getLogger("tether.agent.dns")

UDP_ANSWER_LIMIT = 3


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, api_url: str, datacenter: str, token: Callable[[], str] = lambda: "") -> None:
        self.http = httpx.AsyncClient(base_url=api_url, timeout=5.0,
                                      event_hooks={"request": [lambda request: _with_token(request, token())]})
        self.datacenter = datacenter
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises many types on garbage; a DNS server drops it
            return
        reply = request.reply()
        reply.header.ra = 0
        try:
            await self._fill(reply, request)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("dns: cannot answer %s: %s", request.q.qname, exc)
            reply.header.rcode = RCODE.SERVFAIL
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)

    async def _fill(self, reply: DNSRecord, request: DNSRecord) -> None:
        qname, qtype = str(request.q.qname), QTYPE[request.q.qtype]
        question = parse_query_name(qname)
        if question is None or (question.datacenter and question.datacenter != self.datacenter):
            reply.header.rcode = RCODE.NXDOMAIN
            return
        domain = qname.rstrip(".").rsplit(".", 1)[1]
        if question.kind == "virtual":
            ip = (await self.http.get("/v1/tether/virtual-ips")).json().get(question.name)
            targets = [(None, ip, 0)] if ip else []
        elif question.kind == "node":
            r = await self.http.get(f"/v1/catalog/node/{question.name}")
            targets = [(question.name, r.json()["Node"]["Address"], 0)] if r.status_code == 200 else []
        else:
            targets = await self._instances(question)
        if not targets:
            reply.header.rcode = RCODE.NXDOMAIN
            return
        random.shuffle(targets)
        targets = targets[:UDP_ANSWER_LIMIT]
        if qtype == "SRV" or question.srv_form:
            for node, address, port in targets:
                target = DNSLabel(f"{node}.node.{self.datacenter}.{domain}.")
                reply.add_answer(RR(qname, QTYPE.SRV, ttl=0, rdata=SRV(1, 1, port, target)))
                reply.add_ar(_address_rr(str(target), address))
        elif qtype in ("A", "AAAA", "ANY"):
            for _, address, _ in targets:
                rr = _address_rr(qname, address)
                if qtype == "ANY" or QTYPE[rr.rtype] == qtype:
                    reply.add_answer(rr)

    async def _instances(self, q: Question) -> list[tuple[Any, str, int]]:
        path = f"/v1/health/{'connect' if q.kind == 'connect' else 'service'}/{q.name}"
        params = {"passing": "1", **({"tag": q.tag} if q.tag else {})}
        entries = (await self.http.get(path, params=params)).json()
        return [(e["Node"]["Node"], e["Service"]["Address"] or e["Node"]["Address"], e["Service"]["Port"])
                for e in entries]

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await self.http.aclose()


def _address_rr(name: str, address: str) -> RR:
    if ":" in address:
        return RR(name, QTYPE.AAAA, ttl=0, rdata=AAAA(address))
    return RR(name, QTYPE.A, ttl=0, rdata=A(address))


async def _with_token(request: httpx.Request, secret: str) -> None:
    if secret:
        request.headers["X-Consul-Token"] = secret


async def open_dns(host: str, port: int, api_url: str, datacenter: str,
                   token: Callable[[], str] = lambda: "") -> tuple[DnsServer, int]:
    """Bind the DNS server; return it and the port it got (port 0 picks a free one).

    `token()` is what its lookups carry: the agent's `dns` token, else its `default` token
    (read per query, as either can be set at run time); with ACLs on, DNS answers only
    what that token may read."""
    loop = asyncio.get_running_loop()
    # Bound here, not by the loop: uvloop's own bind error carries no errno or reason.
    sock = socket.socket(family_of(host) or socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise bind_error(host, port, exc, "serve DNS") from None
    transport, server = await loop.create_datagram_endpoint(lambda: DnsServer(api_url, datacenter, token), sock=sock)
    return server, transport.get_extra_info("sockname")[1]
