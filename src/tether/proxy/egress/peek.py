"""Bounded reads of what a client sends first: its TLS ClientHello, if it speaks TLS.

Used twice: the sidecar's transparent listener peeks the application's first bytes (SNI
for policy and routing), and the egress gateway peeks the application's ClientHello
inside the sidecar's tunnel (the SNI verifier). Bytes read are returned, to be forwarded
unchanged. Reading stops at the first of: a complete ClientHello, bytes that cannot be
one (a plaintext protocol: decided after its first byte), EOF, `timeout`, or
`MAX_PEEK` bytes.
"""

from __future__ import annotations

from tether.core.clienthello import MAX_CLIENT_HELLO, ClientHello, parse_client_hello
from tether.proxy.egress.stream import Stream

#: A maximal ClientHello plus the headers of the records it may be split across.
MAX_PEEK = MAX_CLIENT_HELLO + 1024


async def peek_hello(st: Stream, timeout: float, initial: bytes = b"") -> tuple[bytes, ClientHello | None]:
    """(bytes read, the ClientHello or None when the stream does not start with one)."""
    buf = bytearray(initial)
    deadline = st.loop.time() + timeout
    while True:
        if buf:
            try:
                hello = parse_client_hello(buf)
            except ValueError:
                return bytes(buf), None
            if hello is not None:
                return bytes(buf), hello
        left = deadline - st.loop.time()
        if left <= 0 or len(buf) >= MAX_PEEK:
            return bytes(buf), None
        chunk = await st.recv(left)
        if not chunk:  # timeout (None) or EOF (b"")
            return bytes(buf), None
        buf += chunk
