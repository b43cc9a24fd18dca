"""Helpers shared by the test suites."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """A needed service or tool is missing: skip locally, fail in CI (where a skip would hide a
    missing install step)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)")
    pytest.skip(reason)
