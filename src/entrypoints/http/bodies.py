"""Request bodies in the OpenAPI document. Routes decode their bodies through ``json_body``
(one set of rules for every body, ADR 0039), so Litestar never sees a ``data`` parameter and
would document no body: the operation class of such a route carries the body's schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody


def _inline_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of a flat Struct (no nested Structs), without references."""
    schema = msgspec.json.schema(struct)
    name = schema["$ref"].rsplit("/", 1)[-1]
    inline: dict[str, Any] = dict(schema["$defs"][name])
    if "$defs" in inline or len(schema["$defs"]) != 1:
        raise TypeError(f"{struct.__name__} is not flat: document it another way")
    return inline


def documented_body(struct: type[msgspec.Struct], description: str = "") -> type[Operation]:
    """An operation class whose request body is ``struct`` as JSON."""
    body = RequestBody(
        content={"application/json": OpenAPIMediaType(schema=_inline_schema(struct))},  # type: ignore[arg-type]
        description=description or None,
        required=True,
    )

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    WithBody.__name__ = f"{struct.__name__}Operation"
    return WithBody
