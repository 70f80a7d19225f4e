"""Apply one real document through the real API, as `tether apply -f` would (tests/corpus)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tether.cli.apply_cmds import is_egress
from tether.core.k8s_input import expand_documents

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def documents(path: str) -> list[tuple[str, Any]]:
    """(number, document) of a corpus file, `kind: List` expanded, as `tether apply` reads it."""
    return expand_documents(list(yaml.safe_load_all((CORPUS / path).read_text())))


async def apply_one(api: Any, doc: Any) -> tuple[int, list[str], str]:
    """(status, warnings, body text) of applying `doc` alone to the route `tether apply` uses."""
    route = "/v1/tether/external-services" if is_egress(doc) else "/v1/tether/policy"
    r = await api.put(route, json=[doc])
    warnings = r.json().get("Warnings", []) if r.status_code == 200 else []
    return r.status_code, warnings, r.text
