"""Model answers in a ``Cache``: the chunks of a complete answer as one MessagePack value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from application.conversation.ports import (
    ChatChunk,
    TextChunk,
    ToolCallDelta,
    ToolCallEnded,
    ToolCallStarted,
)
from application.ports import Cache

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[list[str]])


def _row(chunk: ChatChunk) -> list[str]:
    if isinstance(chunk, TextChunk):
        return ["t", chunk.delta]
    if isinstance(chunk, ToolCallStarted):
        return ["s", chunk.call_id, chunk.name]
    if isinstance(chunk, ToolCallDelta):
        return ["d", chunk.call_id, chunk.delta]
    if isinstance(chunk, ToolCallEnded):
        return ["e", chunk.call_id]
    raise TypeError(f"a cached answer holds no {type(chunk).__name__}")


_CHUNKS: dict[str, Any] = {
    "t": TextChunk,
    "s": ToolCallStarted,
    "d": ToolCallDelta,
    "e": ToolCallEnded,
}


class CachedResponses:
    """Implements ``ResponseCache`` over any ``Cache``, scoped by tenant. An entry that does
    not decode (written by another version) is a miss."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def get(self, tenant_id: str, key: str) -> Sequence[ChatChunk] | None:
        raw = await self._cache.get(tenant_id, key)
        if raw is None:
            return None
        try:
            return [_CHUNKS[row[0]](*row[1:]) for row in _decoder.decode(raw)]
        except (msgspec.DecodeError, KeyError, TypeError, IndexError):
            return None

    async def set(
        self,
        tenant_id: str,
        key: str,
        chunks: Sequence[ChatChunk],
        *,
        ttl_s: float,
        tags: Sequence[str] = (),
    ) -> None:
        value = _encoder.encode([_row(c) for c in chunks])
        await self._cache.set(tenant_id, key, value, ttl_s=ttl_s, tags=tags)
