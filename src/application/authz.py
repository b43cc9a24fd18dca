"""The one check every use case makes before it acts for a principal: does the credential's
scope cover this kind of work, and may its role change things. Routes do not repeat it, so a
CLI, a worker or a new entry point cannot forget it."""

from __future__ import annotations

from application.errors import Forbidden
from domain.tenancy.model import Principal, Scope


def authorize(principal: Principal, scope: Scope, *, write: bool, action: str) -> None:
    """Raises ``Forbidden`` (``insufficient_scope`` or ``forbidden``) unless ``principal`` may
    ``action`` (a phrase: "start runs", "read the knowledge base")."""
    if not principal.allows(scope):
        raise Forbidden(
            f"this credential may not {action}: it needs the {scope.value!r} scope",
            code="insufficient_scope",
        )
    if write and not principal.can_write:
        raise Forbidden(f"a read-only principal cannot {action}")
