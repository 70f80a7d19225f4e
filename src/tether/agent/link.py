"""How an agent talks to the control plane: in-process (dev mode) or over HTTP.

Both implementations offer the same few calls, so the agent never knows which one it
has. The HTTP link maps transport failures to `Unavailable` (retryable) and the server's
4xx answers back onto the error tree, so a bad registration is reported to the caller
with the server's own reason.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import httpx

from tether.agent.server_pool import ServerPool
from tether.control.intentions import AUTHZ_PREFIXES
from tether.control.server import ControlPlane
from tether.core.health import CRITICAL, NODE_CHECK_ID
from tether.core.errors import (
    Conflict, InvalidInput, NotFound, PermissionDenied, RateLimited, TetherError, TooLarge, Unavailable,
)

_BY_STATUS = {400: InvalidInput, 403: PermissionDenied, 404: NotFound, 409: Conflict, 413: TooLarge}


class ServerLink(Protocol):
    async def cluster(self) -> dict[str, Any]: ...
    async def sync(self, node: dict[str, Any], services: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None: ...
    async def deregister_service(self, node: str, service_id: str) -> None: ...
    async def deregister_check(self, node: str, check_id: str) -> None: ...
    async def update_check(self, node: str, check_id: str, status: str, output: str) -> None: ...
    async def heartbeat(self, node: str) -> None: ...
    async def node_state(self, node: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...
    async def node_health(self) -> list[tuple[dict[str, Any], str]]: ...
    async def sign(self, csr_pem: str, service: str, token: str | None = None,
                   previous_cert_pem: str | None = None) -> dict[str, Any]: ...
    async def roots(self, index: int, wait: float) -> tuple[dict[str, Any], int]: ...
    async def authz_state(self, index: int, wait: float) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class LocalLink:
    """Dev mode: server and agent share a process, so calls are plain method calls."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    async def cluster(self) -> dict[str, Any]:
        return {"ClusterID": self.cp.cluster_id, "Datacenter": self.cp.datacenter}

    async def sync(self, node: dict[str, Any], services: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
        await self.cp.catalog.register(node, services, checks)

    async def deregister_service(self, node: str, service_id: str) -> None:
        await self.cp.catalog.deregister(node, service_id=service_id)

    async def deregister_check(self, node: str, check_id: str) -> None:
        await self.cp.catalog.deregister(node, check_id=check_id)

    async def update_check(self, node: str, check_id: str, status: str, output: str) -> None:
        await self.cp.catalog.update_check(node, check_id, status, output)

    async def heartbeat(self, node: str) -> None:
        await self.cp.heartbeat(node)

    async def node_state(self, node: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self.cp.catalog.node_services(node), self.cp.catalog.node_checks(node)

    async def node_health(self) -> list[tuple[dict[str, Any], str]]:
        catalog = self.cp.catalog
        return [(n, _serf_status(catalog.node_checks(n["Node"]))) for n in catalog.nodes()]

    async def sign(self, csr_pem: str, service: str, token: str | None = None,
                   previous_cert_pem: str | None = None) -> dict[str, Any]:
        """Have the CA sign a leaf CSR (the agent keeps the private key). In one process the
        agent's leaf route has already checked the caller's service:write; the token only
        names the requester for the rate limit's fair share."""
        requester = self.cp.acl.authorizer(token).accessor if self.cp.acl.enabled else "local"
        return await self.cp.ca.sign(csr_pem, service, requester=requester, previous_cert_pem=previous_cert_pem,
                                     namespace=self.cp.catalog.namespace_of(service))

    async def roots(self, index: int, wait: float) -> tuple[dict[str, Any], int]:
        """The CA roots, blocking while their index is still `index` (0: answer now)."""
        new_index = await self.cp.ca.wait_roots(index, wait)
        return self.cp.ca.roots_json(), new_index

    async def authz_state(self, index: int, wait: float) -> dict[str, Any]:
        """Intentions + policy + mesh settings, once their index differs from `index` (0: now)."""
        if index > 0:
            await self.cp.store.wait(AUTHZ_PREFIXES, index, wait)
        return self.cp.intentions.state()

    async def close(self) -> None:
        return None


class HttpLink:
    """An agent on its own node: every call is one HTTP request to the server."""

    def __init__(self, server_addrs: str, *, timeout: float = 10.0, token: Callable[[], str] = lambda: "") -> None:
        #: Every server the agent knows; calls fail over between them (agent/server_pool.py).
        self.pool = ServerPool(server_addrs, timeout=timeout)
        #: The agent's own token (acl.tokens.agent, else default), read at each call: it can change at run time.
        self.token = token

    def _headers(self, token: str | None = None) -> dict[str, str]:
        secret = self.token() if token is None else token
        return {"X-Consul-Token": secret} if secret else {}

    @property
    def base_url(self) -> str:
        return self.pool.base_url

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        # Every call of the link states a full desired value (sync, check status, heartbeat)
        # or reads: repeating it on another server is safe.
        return await self._answer(await self.pool.request(method, path, json=body, headers=self._headers()))

    async def cluster(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/internal/tether/cluster")

    async def sync(self, node: dict[str, Any], services: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
        await self._call("PUT", "/v1/internal/tether/sync", {"Node": node, "Services": services, "Checks": checks})

    async def deregister_service(self, node: str, service_id: str) -> None:
        await self._call("PUT", "/v1/catalog/deregister", {"Node": node, "ServiceID": service_id})

    async def deregister_check(self, node: str, check_id: str) -> None:
        await self._call("PUT", "/v1/catalog/deregister", {"Node": node, "CheckID": check_id})

    async def update_check(self, node: str, check_id: str, status: str, output: str) -> None:
        await self._call("PUT", "/v1/internal/tether/check",
                         {"Node": node, "CheckID": check_id, "Status": status, "Output": output})

    async def heartbeat(self, node: str) -> None:
        await self._call("PUT", f"/v1/internal/tether/heartbeat/{node}")

    async def node_state(self, node: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        try:
            found = await self._call("GET", f"/v1/catalog/node/{node}")
        except NotFound:  # a new node: nothing to restore
            return [], []
        checks = await self._call("GET", f"/v1/health/node/{node}")
        return list(found["Services"].values()), checks

    async def node_health(self) -> list[tuple[dict[str, Any], str]]:
        nodes = await self._call("GET", "/v1/catalog/nodes")
        checks = await self._call("GET", "/v1/health/state/any")
        return [(n, _serf_status([c for c in checks if c["Node"] == n["Node"]])) for n in nodes]

    async def sign(self, csr_pem: str, service: str, token: str | None = None,
                   previous_cert_pem: str | None = None) -> dict[str, Any]:
        """Signed with the caller's token: the server checks service:write on `service`.
        `previous_cert_pem` (the leaf being replaced) makes it a renewal, which the CA's rate
        limit serves first."""
        body = {"CSR": csr_pem, "Service": service}
        if previous_cert_pem:
            body["PreviousCertPEM"] = previous_cert_pem
        response = await self.pool.request("POST", "/v1/connect/ca/sign", json=body, headers=self._headers(token or ""))
        if response.status_code == 429:
            retry = response.headers.get("retry-after", "1")
            raise RateLimited(response.text.strip(), retry_after=float(retry) if retry.isdigit() else 1.0)
        return await self._answer(response)

    async def roots(self, index: int, wait: float) -> tuple[dict[str, Any], int]:
        params = {"index": str(index), "wait": f"{wait:g}s"} if index > 0 else {}
        # A blocking query may legitimately take `wait` (plus the server's jitter of wait/16).
        response = await self.pool.request("GET", "/v1/connect/ca/roots", params=params, timeout=wait * 1.1 + 10,
                                           headers=self._headers())
        body = await self._answer(response)
        return body, int(response.headers.get("x-consul-index", "1"))

    async def _answer(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            cls = _BY_STATUS.get(response.status_code, Unavailable if response.status_code >= 500 else TetherError)
            raise cls(response.text.strip() or f"server answered {response.status_code}")
        return response.json() if response.content else None

    async def authz_state(self, index: int, wait: float) -> dict[str, Any]:
        params = {"index": str(index), "wait": f"{wait:g}s"} if index > 0 else {}
        # A blocking query may take `wait` plus the server's jitter of up to wait/16.
        response = await self.pool.request("GET", "/v1/internal/tether/authz", params=params,
                                           timeout=wait * 1.1 + 10, headers=self._headers())
        return await self._answer(response)

    async def resolve_acl(self, secret: str | None) -> dict[str, Any]:
        """A caller's token as the servers resolve it (rules, management, expiry)."""
        return await self._answer(await self.pool.request("GET", "/v1/internal/tether/acl/resolve",
                                                          headers=self._headers(secret or "")))

    async def close(self) -> None:
        await self.pool.close()


def _serf_status(checks: list[dict[str, Any]]) -> str:
    return next((c["Status"] for c in checks if c["CheckID"] == NODE_CHECK_ID), CRITICAL)
