"""Identifier types shared by every bounded context."""

from __future__ import annotations

import itertools
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


# A random per-process stem and a counter: unique across processes and restarts without a
# system call per id (these ids name records; they are not secrets).
_STEM = secrets.token_hex(6)
_COUNTER = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique identifier with a readable prefix (``msg_…``)."""
    return f"{prefix}_{_STEM}{next(_COUNTER):x}"


def is_valid_client_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and value.isprintable() and not value.isspace()
