"""In-memory knowledge store with a small BM25 ranking: the test double for the SQL stores."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

from domain.audit.model import AuditEvent
from domain.ids import TenantId
from domain.knowledge.model import Chunk, IndexState, IndexStatus, KbDocument, SearchHit
from domain.knowledge.query import search_terms, stem
from domain.knowledge.vectors import similarity, unpack

_WORD = re.compile(r"\w+", re.UNICODE)


def _matches(term: str, word: str) -> bool:
    # Prefix matching stands in for the SQL stores' stemming: "invoice" finds "invoices".
    return word.startswith(term)


class MemoryKnowledgeStore:
    def __init__(self) -> None:
        self._docs: dict[tuple[TenantId, str], tuple[KbDocument, tuple[Chunk, ...]]] = {}
        self._status: dict[tuple[TenantId, str], IndexStatus] = {}
        # What would be in the audit trail (the SQL stores write it in the same transaction).
        self.audited: list[tuple[TenantId, AuditEvent]] = []
        # (tenant, document) -> (model, digest, {ordinal: packed vector})
        self._vectors: dict[tuple[TenantId, str], dict[str, tuple[str, dict[int, bytes]]]] = {}

    async def put(self, document: KbDocument, chunks: Sequence[Chunk]) -> None:
        await self.save(document)
        await self.index(
            document.tenant_id,
            document.id,
            document.digest(),
            chunks,
            now_ms=document.updated_at_ms,
        )

    async def save(self, document: KbDocument, *, audit: AuditEvent | None = None) -> IndexStatus:
        if audit is not None:
            self.audited.append((document.tenant_id, audit))
        key = (document.tenant_id, document.id)
        digest = document.digest()
        old = self._status.get(key)
        chunks = self._docs[key][1] if key in self._docs else ()
        self._docs[key] = (document, chunks)
        if old is not None and old.indexed_digest == digest:
            status = replace(old, state=IndexState.INDEXED, digest=digest, error=None)
        else:
            status = IndexStatus(
                state=IndexState.QUEUED,
                digest=digest,
                indexed_digest=old.indexed_digest if old else None,
                chunks=old.chunks if old else 0,
                generation=old.generation if old else 0,
                updated_at_ms=document.updated_at_ms,
            )
        self._status[key] = status
        return status

    async def index(
        self,
        tenant_id: TenantId,
        document_id: str,
        digest: str,
        chunks: Sequence[Chunk],
        *,
        now_ms: int,
    ) -> IndexStatus | None:
        key = (tenant_id, document_id)
        status = self._status.get(key)
        if status is None:
            return None
        if status.digest != digest or status.indexed_digest == digest:
            return status
        self._docs[key] = (self._docs[key][0], tuple(chunks))
        self._vectors.pop(key, None)
        status = IndexStatus(
            state=IndexState.INDEXED,
            digest=digest,
            indexed_digest=digest,
            chunks=len(chunks),
            generation=status.generation + 1,
            updated_at_ms=now_ms,
        )
        self._status[key] = status
        return status

    async def mark_failed(
        self, tenant_id: TenantId, document_id: str, digest: str, error: str, *, now_ms: int
    ) -> None:
        key = (tenant_id, document_id)
        status = self._status.get(key)
        if status is not None and status.digest == digest and status.indexed_digest != digest:
            self._status[key] = replace(
                status, state=IndexState.FAILED, error=error[:2000], updated_at_ms=now_ms
            )

    async def status(self, tenant_id: TenantId, document_id: str) -> IndexStatus | None:
        return self._status.get((tenant_id, document_id))

    async def get(self, tenant_id: TenantId, document_id: str) -> KbDocument | None:
        entry = self._docs.get((tenant_id, document_id))
        return entry[0] if entry else None

    async def list_documents(
        self,
        tenant_id: TenantId,
        *,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[KbDocument]:
        docs = sorted(
            (d for (t, _), (d, _) in self._docs.items() if t == tenant_id),
            key=lambda d: (d.title.lower(), d.id),
        )
        if after is not None:
            start = (after[0].lower(), after[1])
            docs = [d for d in docs if (d.title.lower(), d.id) > start]
        return docs if limit is None else docs[:limit]

    async def delete(
        self,
        tenant_id: TenantId,
        document_id: str,
        *,
        audit: AuditEvent | None = None,
        at_ms: int = 0,
    ) -> bool:
        self._status.pop((tenant_id, document_id), None)
        self._vectors.pop((tenant_id, document_id), None)
        found = self._docs.pop((tenant_id, document_id), None) is not None
        if found and audit is not None:
            self.audited.append((tenant_id, audit))
        return found

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

    async def set_vectors(
        self,
        tenant_id: TenantId,
        document_id: str,
        digest: str,
        model: str,
        vectors: Sequence[tuple[int, bytes]],
    ) -> bool:
        key = (tenant_id, document_id)
        status = self._status.get(key)
        if status is None or status.indexed_digest != digest:
            return False
        ordinals = {c.ordinal for c in self._docs[key][1]}
        per_model = self._vectors.setdefault(key, {})
        _, stored = per_model.get(model, (digest, {}))
        stored = dict(stored)
        stored.update((o, v) for o, v in vectors if o in ordinals)
        per_model[model] = (digest, stored)
        return True

    async def has_vectors(
        self, tenant_id: TenantId, document_id: str, digest: str, model: str
    ) -> bool:
        key = (tenant_id, document_id)
        status = self._status.get(key)
        if status is None or status.indexed_digest != digest:
            return False
        stored_digest, stored = self._vectors.get(key, {}).get(model, ("", {}))
        return stored_digest == digest and set(stored) >= {c.ordinal for c in self._docs[key][1]}

    async def nearest(
        self, tenant_id: TenantId, model: str, query: bytes, *, limit: int
    ) -> list[SearchHit]:
        target = unpack(query)
        scored = []
        for (t, doc_id), per_model in self._vectors.items():
            if t != tenant_id or model not in per_model:
                continue
            doc, chunks = self._docs[(t, doc_id)]
            texts = {c.ordinal: c.text for c in chunks}
            for ordinal, packed in per_model[model][1].items():
                score = similarity(unpack(packed), target)
                scored.append((score, doc, ordinal, texts[ordinal]))
        scored.sort(key=lambda h: (-h[0], h[1].id, h[2]))
        return [
            SearchHit(
                document_id=doc.id,
                title=doc.title,
                source=doc.source,
                ordinal=ordinal,
                snippet=_snippet(text, []),
                score=score,
            )
            for score, doc, ordinal, text in scored[: max(limit, 0)]
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
