"""Ports a test owns, for processes that must be told a port rather than report one.

`held_port()` binds 127.0.0.1:0 with SO_REUSEADDR and keeps the socket, never listening,
for as long as the test holds it. The kernel never hands that port to anyone else (port 0
skips bound ports; a bind without SO_REUSEADDR fails on it), while the process under test,
which sets SO_REUSEADDR on its listeners as Tether does, can listen on it. Until something
listens there, a connection to it is refused: a held port is also the "dead instance" of
load-balancing tests. Compare binding port 0, closing and passing the number on: anyone can
take the port in between.

Prefer a process that binds port 0 itself and reports the port (the agent's banner, the
proxies' READY line); hold a port only where the number must be known in advance
(an upstream's LocalBindPort, an agent restarted on the same address).
"""

from __future__ import annotations

import socket


class HeldPort:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "HeldPort":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HeldPort({self.host}:{self.port})"


def held_port(host: str = "127.0.0.1") -> HeldPort:
    """A port on `host` that this test holds until it closes the result."""
    return HeldPort(host)


#: The start of the agents' sidecar range, which the test session holds as a foreign program
#: would (tests/conftest.py): no test may depend on a port range being free.
FOREIGN_SIDECAR_RANGE = (21000, 21010)


def hold_range(first: int, last: int, host: str = "127.0.0.1") -> list[socket.socket]:
    """Listen on every free port of first..last, as another program on the machine would;
    ports someone else holds already are left to them. Close the sockets to let go."""
    held = []
    for port in range(first, last + 1):
        sock = socket.socket()
        try:
            sock.bind((host, port))
            sock.listen(8)
        except OSError:
            sock.close()
            continue
        held.append(sock)
    return held
