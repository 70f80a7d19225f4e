"""May this request have come from a browser page that is not ours? Pure.

    policy = BrowserPolicy.build(names=["n1"], origins=["https://ui.example"])
    decide_browser(policy, host="127.0.0.1:8500", origin="http://evil.example")  # -> reason

A browser lets any web page send requests to any address, the API's loopback included:
a form or `fetch(..., {mode: "no-cors"})` POST with `Content-Type: text/plain` needs no
CORS preflight, so a page could create intentions on the agent of whoever visits it. And
with DNS rebinding (evil.example resolving first to the attacker, then to 127.0.0.1) the
page is "same-origin" with the API and may read answers too: leaves and their keys.

Two headers tell these apart from the CLI and library clients (py-consul, httpx, the
proxies), which send no `Origin` and a `Host` that is the address they dialled:

1. `Host` must name this API: an IP literal, `localhost`, the node name, or a name the
   configuration lists (`http_config.allowed_hosts`). A rebinding page's Host is the
   attacker's name. No Host at all (HTTP/1.0) is not a browser: allowed.
2. `Origin`, when present, must be the API's own (the same host and port as `Host`) or
   one the configuration lists (`http_config.allowed_origins`). Browsers send Origin on
   every cross-origin request and on every POST/PUT/DELETE; `null` (a sandboxed or
   file:// page) is never ours.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class BrowserPolicy:
    names: frozenset[str]  # Host names accepted besides IP literals and localhost (lowercase)
    origins: frozenset[str]  # origins accepted besides the API's own (normalised)

    @classmethod
    def build(cls, names: list[str] | tuple[str, ...], origins: list[str] | tuple[str, ...]) -> "BrowserPolicy":
        return cls(frozenset(_bare(n) for n in names if n), frozenset(normalise_origin(o) or o for o in origins))


def _bare(name: str) -> str:
    """A DNS name as compared: lowercase, without the root's trailing dot."""
    return name.lower().rstrip(".")


def split_host(value: str) -> tuple[str, str]:
    """A Host header's (host, port); port "" when absent. ValueError when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 literal: [::1]:8500
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(value)
        ipaddress.IPv6Address(host)
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
    if (port and not port.isdigit()) or not host:
        raise ValueError(value)
    return host, port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def normalise_origin(origin: str) -> str | None:
    """scheme://host[:port] in lowercase, without its scheme's default port; None when it is
    not an http(s) origin (`null`, a path, a scheme of another kind)."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username is not None:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    explicit = "" if port is None or str(port) == DEFAULT_PORTS[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host}{explicit}"


def origin_problem(origin: str) -> str | None:
    """Why a configured allowed origin can never match, or None."""
    if normalise_origin(origin) is None:
        return f"{origin!r} is not an origin; write scheme://host[:port], e.g. https://ui.example.com"
    return None


def host_name_problem(name: str) -> str | None:
    """Why a configured allowed host is not a bare host name, or None."""
    try:
        host, port = split_host(name)
    except ValueError:
        host, port = "", ""
    if not host or port or "/" in name:
        return f"{name!r} is not a host name; write the name alone, e.g. tether.example.com"
    return None


def decide_browser(policy: BrowserPolicy, host: str | None, origin: str | None) -> str | None:
    """The reason to refuse the request (403), or None to let it through."""
    # 1. Host names this API (or is absent).
    if host is not None:
        try:
            name, port = split_host(host)
        except ValueError:
            return f"Host {host!r} is malformed"
        if not (is_ip_literal(name) or _bare(name) == "localhost" or _bare(name) in policy.names):
            return (f"Host {host!r} is not a name of this API (an IP address, localhost, the node name or "
                    "http_config.allowed_hosts): refused as DNS rebinding; if clients reach the API by this "
                    "name, add it to http_config.allowed_hosts")
    # 2. Origin, if any, is the API's own or a configured one.
    if origin is None:
        return None
    normal = normalise_origin(origin)
    if normal is not None and (normal in policy.origins or (host is not None and _same_origin(normal, host))):
        return None
    return (f"Origin {origin!r} is not this API's own nor in http_config.allowed_origins: "
            "requests from other web pages are refused")


def _same_origin(origin: str, host: str) -> bool:
    """Does the (normalised) origin name the host and port this request was sent to? The
    scheme is not compared: the API speaks plain HTTP, so an https origin on the same host
    and port is a TLS-terminating proxy in front of it, which is the API's own page."""
    scheme, _, authority = origin.partition("://")
    name, port = split_host(host)
    if port == DEFAULT_PORTS[scheme]:
        port = ""
    bracketed = f"[{name}]" if ":" in name else name
    return authority == bracketed + (f":{port}" if port else "")
