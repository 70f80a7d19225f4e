"""The CLI's HTTP client: finds the agent (sdk/addr.py), maps answers onto the error tree."""

from __future__ import annotations

from typing import Any

import httpx

from tether.sdk.addr import resolve_addr, resolve_token

from tether.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied, RateLimited, TetherError, TooLarge, Unavailable

_BY_STATUS = {400: InvalidInput, 403: PermissionDenied, 404: NotFound, 409: Conflict, 413: TooLarge,
              429: RateLimited}


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = resolve_addr(addr)
        headers = {}
        token = token or resolve_token()
        if token:
            headers["X-Consul-Token"] = token
        self.http = httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, *, ok404: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise Unavailable(
                f"cannot reach the Tether agent at {self.base}: is it running? Start one with "
                "'tether agent -dev', or point TETHER_HTTP_ADDR at yours"
            ) from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"request to {self.base}{path} failed: {exc}") from None
        if response.status_code == 404 and ok404:
            return response
        if response.status_code >= 400:
            message = response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
            cls = _BY_STATUS.get(response.status_code, Unavailable if response.status_code >= 500 else TetherError)
            raise cls(message)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)
