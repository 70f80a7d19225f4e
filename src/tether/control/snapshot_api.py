"""GET /v1/snapshot: the store's documents at one index (`tether snapshot save`).

The snapshot holds every secret of the cluster (ACL tokens, the CA's private keys), so it
needs acl:write (Consul asks for a management token). Restoring is offline, into an empty
store (`tether snapshot restore`, cli/snapshot_cmds.py); PUT /v1/snapshot is not served.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from tether.api.acl import needs, request_acl
from tether.api.common import authorizer_dependency
from tether.control.server import ControlPlane
from tether.store.snapshot import save


def snapshot_router(cp: ControlPlane) -> APIRouter:
    r = APIRouter(dependencies=[Depends(authorizer_dependency())])

    @r.get("/v1/snapshot", tags=["snapshot"], **needs("acl:write", on="the snapshot holds every secret"))
    async def snapshot_save(request: Request) -> Response:
        request_acl(request).require("acl", "", "write")
        return Response(save(cp.store), media_type="application/gzip",
                        headers={"X-Consul-Index": str(cp.store.revision)})

    return r
