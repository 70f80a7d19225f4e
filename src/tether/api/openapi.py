"""The /openapi.json document says what the API answers: errors are one line of text.

FastAPI documents a 422 (its JSON validation error) on every route with parameters, but
Tether answers validation errors 400 with a line of text (api/common.py), as Consul does,
so the document promised a status and a body that never come and left out the ones that
do. Here every operation declares the errors it may answer instead: 4XX (bad input, ACL,
not found, conflict, too large, rate limited, wrong method) and 503 (unavailable, shutting
down), both text/plain. The conformance findings that remain are in docs/api.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

TEXT_ERROR = {"content": {"text/plain": {"schema": {"type": "string"}}}}
ERRORS = {
    "4XX": {"description": "The request is refused: one line of text saying why.", **TEXT_ERROR},
    "503": {"description": "Unavailable (the server cannot be reached, or the agent is shutting down); retry.",
            **TEXT_ERROR},
}
#: FastAPI's schemas for the 422 body; no route answers one.
_UNUSED = ("HTTPValidationError", "ValidationError")


def tether_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, response in ERRORS.items():
                responses.setdefault(status, response)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _UNUSED:
        schemas.pop(name, None)
    if "components" in doc and not schemas:
        doc["components"].pop("schemas", None)
        if not doc["components"]:
            del doc["components"]
    return doc


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, on first request, when every router is in
            app.openapi_schema = tether_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
