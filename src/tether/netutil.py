"""Socket helpers shared by the agent, the proxy and the tests (Linux specifics live here)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a connection redirected by iptables REDIRECT/DNAT was originally going."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def family_of(host: str) -> int | None:
    """AF_INET / AF_INET6 for an IP literal, None for a name that needs resolving."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host)
            return fam
        except OSError:
            pass
    return None


async def resolve_ip(host: str, port: int) -> str:
    """`host` itself when it is an IP literal, else its first address (OSError if none)."""
    if family_of(host) is not None:
        return host
    info = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return info[0][4][0]


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_error(host: str, port: int, exc: OSError, what: str = "listen") -> OSError:
    """The same error, worded so it names the address ("[Errno 98] Address already in use"
    alone does not say which of a process's listeners failed)."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    message = f"cannot {what} on {format_hostport(host, port)}: {reason}"
    return OSError(exc.errno, message) if exc.errno else OSError(message)


#: Kernel accept queue for every listener; the anchors' native proxies use the same.
BACKLOG = 4096


def open_listen_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A non-blocking listening TCP socket on an IP literal (SO_REUSEADDR, as every server
    here sets it). A failure raises OSError naming the address."""
    fam = family_of(host)
    if fam is None:
        raise OSError(errno.EINVAL, f"bind address {host!r} is not an IP address")
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise bind_error(host, port, exc) from None
    return sock
