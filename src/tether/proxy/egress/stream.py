"""Connection setup I/O for the egress proxy: async reads, writes, dials and TLS handshakes.

Setup (peek the ClientHello, read the gateway preamble, negotiate PostgreSQL's SSLRequest,
handshake) is short and runs as one coroutine per connection; the bytes then move on the
callback-driven hot path (`splice.Splice`). Both work on the same raw non-blocking
sockets and `ssl.MemoryBIO` sessions, so nothing is re-wrapped at the hand-over.

Reads wait for readability and then recv without blocking, so a timeout never loses bytes
that were already taken off the socket (a cancelled `sock_recv` can, on Python 3.11).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Callable

from tether.netutil import family_of
from tether.proxy.egress.splice import End

READ_CHUNK = 65536
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SetupError(Exception):
    """Setup could not go on: `result` is the access-log result, the message its reason."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


async def wait_readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float | None) -> bool:
    """True once `fd` is readable, False when `timeout` seconds pass first."""
    fut = loop.create_future()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        if timeout is None:
            await fut
        else:
            await asyncio.wait_for(fut, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


class Stream:
    """One side of a connection during setup; `end()` hands it to the splice afterwards."""

    __slots__ = ("loop", "sock", "fd", "obj", "inc", "out", "peer")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: str = "") -> None:
        self.loop, self.sock, self.fd = loop, sock, sock.fileno()
        self.obj: ssl.SSLObject | None = None
        self.inc = self.out = None
        self.peer = peer

    def end(self) -> End:
        return End(self.sock, self.obj, self.inc, self.out)

    async def recv_raw(self, timeout: float | None = None) -> bytes | None:
        """Bytes off the socket (b"" at EOF), or None when `timeout` passes first."""
        while True:
            try:
                return self.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                pass
            if not await wait_readable(self.loop, self.fd, timeout):
                return None

    async def recv(self, timeout: float | None = None) -> bytes | None:
        """Application bytes (decrypted on a TLS side); b"" at EOF, None on timeout."""
        if self.obj is None:
            return await self.recv_raw(timeout)
        while True:
            try:
                return self.obj.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b""
            raw = await self.recv_raw(timeout)
            if not raw:
                return raw
            self.inc.write(raw)

    async def send(self, data: bytes) -> None:
        if not data:
            return
        if self.obj is not None:
            self.obj.write(data)
            data = self.out.read()
        await self.loop.sock_sendall(self.sock, data)

    async def start_tls(self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None,
                        raw_sink: Callable[[bytes], None] | None = None) -> None:
        """Run the TLS handshake; `raw_sink` sees every raw byte received until it completes.

        Raises ssl.SSLError / ConnectionError on failure (the caller names the reason).
        """
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side, server_hostname=server_hostname)
        while True:
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError:
                await self._flush_out()  # deliver our alert so the peer learns why
                raise
            await self._flush_out()
            if done:
                return
            raw = await self.recv_raw()
            if not raw:
                raise ConnectionResetError("the peer closed the connection during the TLS handshake")
            if raw_sink is not None:
                raw_sink(raw)
            self.inc.write(raw)

    async def _flush_out(self) -> None:
        data = self.out.read()
        if data:
            try:
                await self.loop.sock_sendall(self.sock, data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


async def dial(loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float) -> socket.socket:
    """A connected non-blocking TCP socket to the IP `host`; OSError on failure or timeout."""
    fam = family_of(host)
    if fam is None:
        raise OSError(errno.EINVAL, f"{host} is not an IP address")
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(*NODELAY)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
    except TimeoutError:
        sock.close()
        raise OSError(errno.ETIMEDOUT, f"connect timeout after {timeout:g}s") from None
    except BaseException:
        sock.close()
        raise
    return sock


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple[str, int]]:
    """(IP, port) pairs for `host` (an IP literal resolves to itself), in resolver order."""
    if family_of(host) is not None:
        return [(host, port)]
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[tuple[str, int], None] = {}
    for _family, _type, _proto, _canon, addr in infos:
        seen[(addr[0], addr[1])] = None
    return list(seen)


async def dial_first(loop: asyncio.AbstractEventLoop, addresses: tuple[tuple[str, int], ...],
                     timeout: float) -> tuple[socket.socket, str]:
    """Resolve and dial `addresses` in order; the first that connects, with its "ip:port".

    Raises SetupError("upstream-connect-failure", every attempt's error) when none does.
    """
    errors: list[str] = []
    for host, port in addresses:
        try:
            resolved = await resolve(loop, host, port)
        except OSError as e:
            errors.append(f"{host}: cannot resolve: {e.strerror or e}")
            continue
        for ip, p in resolved:
            shown = format_addr(ip, p)
            try:
                return await dial(loop, ip, p, timeout), shown
            except OSError as e:
                errors.append(f"{shown}: {e.strerror or e}")
    raise SetupError("upstream-connect-failure", "; ".join(errors) or "no address to connect to")


def format_addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
