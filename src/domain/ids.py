"""Identifier types shared by every bounded context."""

from __future__ import annotations

import secrets
from typing import NewType

TenantId = NewType("TenantId", str)
ThreadId = NewType("ThreadId", str)
RunId = NewType("RunId", str)
MessageId = NewType("MessageId", str)
ApiKeyId = NewType("ApiKeyId", str)

# Client-supplied identifiers (AG-UI threadId, runId, message ids) are opaque strings; we only
# bound them so they stay index- and log-friendly.
MAX_ID_LENGTH = 128


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier with a readable prefix (``msg_…``)."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


def is_valid_client_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and value.isprintable() and not value.isspace()
