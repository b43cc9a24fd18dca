"""Secrets from settings: a mounted file wins over an inline value."""

from __future__ import annotations

from pathlib import Path

from entrypoints.settings import SettingsError


def read_secret(value: str | None, path: str | None, name: str) -> str | None:
    """The file's content (stripped) when ``path`` is set, else ``value``; an unreadable file
    stops start-up naming the setting ``name``."""
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{name}: {exc}") from exc
    return value
