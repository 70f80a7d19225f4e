"""The one line a sidecar sends its egress gateway before the application's bytes.

Pure code (bytes in, values out). The sidecar-to-gateway hop is mutual TLS whose SNI is
the external host the application asked for (so the gateway can route on it and check it
against the application's own ClientHello). What the SNI cannot carry travels as the first
line inside that TLS stream:

    TETHER-EGRESS/1 <original destination IP, or -> <original destination port>\\r\\n

The port tells the gateway which registry port the connection is for; the IP is only used
for plain TCP (no SNI), where it is the destination. For TLS the gateway routes on the
SNI and ignores the IP, so a workload cannot claim an allowed host and reach another
address (the point of Istio's "SNI verifier"). Like the PROXY protocol's v1 header, the
line is short, ASCII and bounded, and anything else is refused.
"""

from __future__ import annotations

import ipaddress

MAGIC = b"TETHER-EGRESS/1 "
#: "TETHER-EGRESS/1 " + an IPv6 address (45) + " 65535\r\n" fits well inside this.
MAX_PREAMBLE = 96


def format_preamble(ip: str | None, port: int) -> bytes:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not in 1..65535")
    if ip is not None:
        ip = str(ipaddress.ip_address(ip))
    return MAGIC + f"{ip or '-'} {port}\r\n".encode("ascii")


def parse_preamble(data: bytes | bytearray) -> tuple[str | None, int, int] | None:
    """(ip or None, port, bytes consumed) from the start of `data`; None = need more bytes.

    Raises ValueError when `data` does not start with a well-formed preamble.
    """
    head = bytes(data[:len(MAGIC)])
    if not MAGIC.startswith(head):
        raise ValueError("the stream does not start with the TETHER-EGRESS/1 preamble")
    end = data.find(b"\r\n", 0, MAX_PREAMBLE)
    if end < 0:
        if len(data) >= MAX_PREAMBLE:
            raise ValueError(f"the TETHER-EGRESS/1 preamble is longer than {MAX_PREAMBLE} bytes")
        return None
    fields = bytes(data[len(MAGIC):end]).split(b" ")
    if len(fields) != 2:
        raise ValueError("the TETHER-EGRESS/1 preamble must be '<ip or -> <port>'")
    raw_ip, raw_port = fields
    if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535 or raw_port.startswith(b"0"):
        raise ValueError(f"the TETHER-EGRESS/1 preamble carries a bad port {raw_port[:8]!r}")
    ip = None
    if raw_ip != b"-":
        try:
            ip = str(ipaddress.ip_address(raw_ip.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"the TETHER-EGRESS/1 preamble carries a bad IP {raw_ip[:48]!r}") from None
    return ip, int(raw_port), end + 2
