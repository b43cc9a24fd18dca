"""How deep JSON input may nest: one limit for request bodies, webhook payloads and tool
arguments, whoever sends them (ADR 0039).

Decoders recurse once per level, so a body of ten thousand ``[`` exhausts the stack long before
any size limit applies. A value deeper than ``MAX_JSON_DEPTH`` is refused; a decoder that runs
out of stack first (``RecursionError``) is read as the same refusal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Objects and arrays inside one another, the outermost counting as 1: far beyond what any
# state, tool schema or template data needs, far below what the decoders and encoders on the
# way (msgspec, json, Jinja, Postgres jsonb) can take.
MAX_JSON_DEPTH = 64

TOO_DEEP = f"JSON nested more than {MAX_JSON_DEPTH} levels deep is refused"


def _children(node: object) -> Iterable[object] | None:
    """The values inside a container (dict, list, tuple, msgspec Struct); None for a scalar."""
    if isinstance(node, Mapping):
        return node.values()
    if isinstance(node, list | tuple):
        return node
    fields: tuple[str, ...] | None = getattr(type(node), "__struct_fields__", None)
    if fields is None:
        return None
    return [getattr(node, f) for f in fields]


def json_too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON) nests objects and arrays more than ``limit`` deep.
    Iterative, so a deep value cannot exhaust the stack here either."""
    stack: list[tuple[Iterable[object], int]] = []
    top = _children(value)
    if top is not None:
        if limit < 1:
            return True
        stack.append((top, 1))
    while stack:
        children, depth = stack.pop()
        for child in children:
            inner = _children(child)
            if inner is not None:
                if depth >= limit:
                    return True
                stack.append((inner, depth + 1))
    return False
