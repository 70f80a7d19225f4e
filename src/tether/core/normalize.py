"""Key normalisation for Consul-shaped JSON bodies.

Consul accepts `Name`, `name` and (from HCL/config files) `local_bind_port` for
`LocalBindPort`: Go's JSON decoder matches field names case-insensitively and Consul
translates snake_case. We accept the same by comparing keys with case and underscores
folded, and rewrite them to the canonical CamelCase before strict validation.

Nothing is ignored silently: a key that matches no field is reported with its path
("Service.Connect.SidecarServce: unknown field"), so a typo is an error, never a loss.
User-owned maps (Meta, Proxy.Config, NodeMeta, HTTP headers) are kept verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.core.errors import InvalidInput

OPAQUE = "opaque"  # a map whose keys belong to the user: copied as is


@dataclass(frozen=True)
class Shape:
    """The canonical fields of one JSON object; values are nested Shapes, [Shape], or None."""

    fields: dict[str, Any]
    aliases: dict[str, str] = field(default_factory=dict)

    def lookup(self) -> dict[str, str]:
        table = {_fold(name): name for name in self.fields}
        table.update({_fold(alias): target for alias, target in self.aliases.items()})
        return table


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def normalize(data: Any, shape: Shape, path: str, errors: list[str]) -> Any:
    """Return `data` with canonical keys; append one message per problem to `errors`."""
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a JSON object, got {_kind(data)}")
        return data
    table = shape.lookup()
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical = table.get(_fold(key)) if isinstance(key, str) else None
        if canonical is None:
            errors.append(f"{path}.{key}: unknown field")
            continue
        if canonical in out:
            errors.append(f"{path}.{key}: given twice (as {canonical} too)")
            continue
        sub = shape.fields[canonical]
        where = f"{path}.{canonical}"
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and (
                isinstance(sub, (Shape, dict)) or sub == OPAQUE):
            value = value[0]  # an HCL block (`connect { ... }`) where an object is meant, as Consul decodes it
        if value is None or sub is None or sub == OPAQUE:
            out[canonical] = value
        elif isinstance(sub, Shape):
            out[canonical] = normalize(value, sub, where, errors)
        elif isinstance(sub, list):
            if not isinstance(value, list):
                errors.append(f"{where}: expected a list, got {_kind(value)}")
                continue
            out[canonical] = [normalize(v, sub[0], f"{where}[{i}]", errors) for i, v in enumerate(value)]
        elif isinstance(sub, dict):  # {"*": Shape}: user keys, shaped values (TaggedAddresses)
            if not isinstance(value, dict):
                errors.append(f"{where}: expected a JSON object, got {_kind(value)}")
                continue
            out[canonical] = {k: normalize(v, sub["*"], f"{where}.{k}", errors) for k, v in value.items()}
    return out


def raise_if(errors: list[str]) -> None:
    """All problems in one InvalidInput: the first few on one line, then a count."""
    if errors:
        shown = "; ".join(errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidInput(shown + more)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def pydantic_errors(exc: Any, path: str) -> list[str]:
    """Turn a pydantic ValidationError into our one-line-per-field messages."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        out.append(f"{path}.{loc}: {err['msg']}" if loc else f"{path}: {err['msg']}")
    return out
