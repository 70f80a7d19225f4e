"""Shared pieces of the policy document schemas (Tether and Linkerd kinds): strict models,
domain checks run inside pydantic, and the error reporting that turns a ValidationError
into one line per problem (with a "did you mean" for misspelt fields).

Used by core/policy_yaml.py (Tether kinds, entry points) and core/policy_linkerd.py
(Linkerd kinds). Pure.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from tether.core.cidr import parse_network
from tether.core.errors import InvalidInput
from tether.core.policy import parse_identity_pattern
from tether.core.spiffe import validate_service_name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Spelled out (not derived from DefaultPolicy) so a schema error lists the valid values.
_PolicyName = Literal["all-unauthenticated", "all-authenticated", "cluster-authenticated", "cluster-unauthenticated", "deny", "audit"]
_ActionName = Literal["allow", "deny"]
_Port = Field(default=None, ge=1, le=65535)


def _checked(check: Any) -> AfterValidator:
    """Run a domain check inside pydantic, so its errors are collected with the schema's."""

    def run(value: Any) -> Any:
        try:
            check(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value

    return AfterValidator(run)


def _intention_name(value: str) -> None:
    if value != "*":
        if "*" in value:
            raise InvalidInput(f"{value!r}: '*' may only stand alone, not inside a name")
        validate_service_name(value)


_Cidr = Annotated[str, _checked(lambda v: parse_network(v, field=""))]
_Identity = Annotated[str, _checked(lambda v: parse_identity_pattern(v, field=""))]
_ServiceName = Annotated[str, _checked(validate_service_name)]
_IntentionName = Annotated[str, _checked(_intention_name)]


class _Network(_Strict):
    cidr: _Cidr
    except_: list[_Cidr] = Field(default_factory=list, alias="except")



#: Field names of every schema model, for "did you mean" hints; each schema module registers its models.
_KNOWN_FIELDS: set[str] = set()


def register_fields(*models: type[BaseModel]) -> None:
    """Add the models' field names to the "did you mean" vocabulary."""
    for model in models:
        _KNOWN_FIELDS.update(f.alias or n for n, f in model.model_fields.items())


def messages(exc: InvalidInput) -> tuple[str, ...]:
    """The separate problems an InvalidInput carries (`exc.errors` when set)."""
    return getattr(exc, "errors", None) or (exc.message,)


def nets(networks: list[_Network]) -> list[dict[str, Any]]:
    """Schema networks as the plain `{cidr, except}` mappings core/policy.py takes."""
    return [{"cidr": n.cidr, "except": n.except_} for n in networks]


def validate(model: type[BaseModel], data: Any, label: str, prefix: str, errors: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            errors.append(f"{label}: {path}: {explain_error(err)}")
        return None


def explain_error(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        close = difflib.get_close_matches(key, sorted(_KNOWN_FIELDS), n=1, cutoff=0.7)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if err["type"] == "literal_error":  # name the offending value, then the valid ones
        return f"unknown value {err.get('input')!r}; use {err.get('ctx', {}).get('expected', 'a listed value')}"
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        return str(err["ctx"]["error"])  # our own domain message, without pydantic's prefix
    return str(err["msg"])



register_fields(_Network)
