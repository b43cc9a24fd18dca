"""In-memory knowledge store with a small BM25 ranking: the test double for the SQL stores."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from domain.ids import TenantId
from domain.knowledge.model import Chunk, KbDocument, SearchHit
from domain.knowledge.query import search_terms, stem

_WORD = re.compile(r"\w+", re.UNICODE)


def _matches(term: str, word: str) -> bool:
    # Prefix matching stands in for the SQL stores' stemming: "invoice" finds "invoices".
    return word.startswith(term)


class MemoryKnowledgeStore:
    def __init__(self) -> None:
        self._docs: dict[tuple[TenantId, str], tuple[KbDocument, tuple[Chunk, ...]]] = {}

    async def put(self, document: KbDocument, chunks: Sequence[Chunk]) -> None:
        self._docs[(document.tenant_id, document.id)] = (document, tuple(chunks))

    async def get(self, tenant_id: TenantId, document_id: str) -> KbDocument | None:
        entry = self._docs.get((tenant_id, document_id))
        return entry[0] if entry else None

    async def list_documents(self, tenant_id: TenantId) -> list[KbDocument]:
        docs = [d for (t, _), (d, _) in self._docs.items() if t == tenant_id]
        return sorted(docs, key=lambda d: (d.title.lower(), d.id))

    async def delete(self, tenant_id: TenantId, document_id: str) -> bool:
        return self._docs.pop((tenant_id, document_id), None) is not None

    async def chunk_count(self, tenant_id: TenantId, document_id: str) -> int:
        entry = self._docs.get((tenant_id, document_id))
        return len(entry[1]) if entry else 0

    async def search(self, tenant_id: TenantId, query: str, *, limit: int) -> list[SearchHit]:
        terms = [stem(t) for t in search_terms(query)]
        if not terms:
            return []
        rows = [
            (doc, chunk, [w.lower() for w in _WORD.findall(f"{doc.title} {chunk.text}")])
            for (t, _), (doc, chunks) in self._docs.items()
            if t == tenant_id
            for chunk in chunks
        ]
        if not rows:
            return []
        avg = sum(len(words) for _, _, words in rows) / len(rows)
        df = {
            term: sum(1 for *_, ws in rows if any(_matches(term, w) for w in ws)) for term in terms
        }
        hits = []
        for doc, chunk, words in rows:
            score = 0.0
            for term in terms:
                tf = sum(1 for w in words if _matches(term, w))
                if not tf:
                    continue
                idf = math.log(1 + (len(rows) - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(words) / avg))
            if score > 0:
                hits.append((score, doc, chunk))
        hits.sort(key=lambda h: (-h[0], h[1].id, h[2].ordinal))
        return [
            SearchHit(
                document_id=doc.id,
                title=doc.title,
                source=doc.source,
                ordinal=chunk.ordinal,
                snippet=_snippet(chunk.text, terms),
                score=score,
            )
            for score, doc, chunk in hits[:limit]
        ]


def _snippet(text: str, terms: list[str], width: int = 320) -> str:
    if len(text) <= width:
        return text.strip()
    lowered = text.lower()
    at = min((i for i in (lowered.find(t) for t in terms) if i >= 0), default=0)
    start = max(0, at - width // 3)
    if start:
        # Start on a word, not inside one.
        space = text.find(" ", start, at + 1)
        start = space + 1 if space != -1 else start
    piece = text[start : start + width].strip()
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")
