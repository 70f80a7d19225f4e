"""Where the local agent is: the flag, else TETHER_HTTP_ADDR, else CONSUL_HTTP_ADDR (so a
shell set up for Consul works as is), else 127.0.0.1:8500."""

from __future__ import annotations

import os
from typing import Mapping

DEFAULT_ADDR = "127.0.0.1:8500"


def resolve_addr(flag_value: str | None, env: Mapping[str, str] = os.environ) -> str:
    addr = flag_value or env.get("TETHER_HTTP_ADDR") or env.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"


def resolve_token(flag_value: str | None = None, flag_file: str | None = None,
                  env: Mapping[str, str] = os.environ) -> str | None:
    """The ACL token, as Consul's CLI finds it: -token, -token-file, then TETHER_HTTP_TOKEN /
    CONSUL_HTTP_TOKEN, then their _FILE forms (a file holding the secret keeps it out of
    `ps` and shell history). None: no token (the agent uses its default, else anonymous)."""
    if flag_value:
        return flag_value
    if flag_file:
        return _read_token_file(flag_file, "-token-file")
    for name in ("TETHER_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"):
        if env.get(name):
            return env[name]
    for name in ("TETHER_HTTP_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE"):
        if env.get(name):
            return _read_token_file(env[name], name)
    return None


def _read_token_file(path: str, what: str) -> str:
    from tether.core.errors import InvalidInput

    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise InvalidInput(f"{what}: {path} is empty")
    return secret
