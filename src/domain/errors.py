"""Domain errors: each carries a stable machine code that the HTTP edge maps to a status."""

from __future__ import annotations


class DomainError(Exception):
    code: str = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvariantViolated(DomainError):
    code = "invariant_violated"


class InvalidTransition(DomainError):
    code = "invalid_run_transition"
