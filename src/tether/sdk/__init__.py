"""Native mesh integration for Python services: `from tether.sdk import Service`.

`Service` is loaded on first use, so the parts of Tether that only need `tether.sdk.addr`
(the CLI, the lean proxy process) do not import its HTTP client.
"""

from typing import Any

__all__ = ["Decision", "Service"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tether.sdk import service

        return getattr(service, name)
    raise AttributeError(f"module 'tether.sdk' has no attribute {name!r}")
