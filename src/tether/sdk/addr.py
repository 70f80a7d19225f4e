"""Where the local agent is: the flag, else TETHER_HTTP_ADDR, else CONSUL_HTTP_ADDR (so a
shell set up for Consul works as is), else 127.0.0.1:8500."""

from __future__ import annotations

import os
from typing import Mapping

DEFAULT_ADDR = "127.0.0.1:8500"


def resolve_addr(flag_value: str | None, env: Mapping[str, str] = os.environ) -> str:
    addr = flag_value or env.get("TETHER_HTTP_ADDR") or env.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"
