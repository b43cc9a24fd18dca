"""Embedding vectors and hybrid ranking: packing, similarity, reciprocal rank fusion
(property-tested), and the use cases that embed while indexing and fuse while searching."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.knowledge import MemoryKnowledgeStore
from application.errors import ServiceUnavailable
from application.knowledge.use_cases import HybridKnowledgeSearch, IndexDocument, index_job
from domain.errors import InvariantViolated
from domain.ids import TenantId
from domain.knowledge.model import KbDocument, SearchHit
from domain.knowledge.text import ContentType
from domain.knowledge.vectors import RRF_K, fuse, normalize, pack, similarity, unpack

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
vectors = st.lists(finite, min_size=1, max_size=32).filter(
    lambda v: math.fsum(x * x for x in v) > 1e-6
)


@given(vectors)
def test_a_packed_vector_unpacks_to_unit_length_in_the_same_direction(v) -> None:
    out = unpack(pack(v))
    assert len(out) == len(v)
    assert math.isclose(math.fsum(x * x for x in out), 1.0, rel_tol=1e-4)
    assert similarity(out, unpack(pack(v))) == pytest.approx(1.0, rel=1e-4)
    assert similarity(out, normalize(v)) == pytest.approx(1.0, rel=1e-4)


@given(vectors, vectors)
def test_similarity_is_symmetric_and_bounded(a, b) -> None:
    ua, ub = unpack(pack(a)), unpack(pack(b))
    s = similarity(ua, ub)
    if len(a) != len(b):
        assert s == -1.0
    else:
        assert -1.0001 <= s <= 1.0001
        assert s == pytest.approx(similarity(ub, ua), abs=1e-6)


@pytest.mark.parametrize("bad", [[], [0.0, 0.0], [math.nan, 1.0], [math.inf]])
def test_vectors_that_have_no_direction_are_refused(bad) -> None:
    with pytest.raises(InvariantViolated):
        pack(bad)
    with pytest.raises(InvariantViolated):
        unpack(b"\x00\x00\x80")


def hit(doc: str, ordinal: int = 0, score: float = 1.0, snippet: str = "") -> SearchHit:
    return SearchHit(
        document_id=doc, title=doc, source="", ordinal=ordinal, snippet=snippet, score=score
    )


chunk_ids = st.tuples(st.sampled_from("abcdef"), st.integers(0, 3))
rankings = st.lists(st.lists(chunk_ids, max_size=12), min_size=1, max_size=3)


@given(rankings, st.integers(0, 30))
def test_fusion_keeps_each_chunk_once_best_first_within_the_limit(lists, limit) -> None:
    fused = fuse([[hit(d, o) for d, o in r] for r in lists], limit=limit)
    keys = [(h.document_id, h.ordinal) for h in fused]
    union = {k for r in lists for k in r}
    assert len(keys) == len(set(keys)) == min(limit, len(union))
    assert set(keys) <= union
    scores = [h.score for h in fused]
    assert scores == sorted(scores, reverse=True)
    for h in fused:
        expected = 0.0
        for r in lists:
            firsts = list(dict.fromkeys(r))
            if (h.document_id, h.ordinal) in firsts:
                expected += 1 / (RRF_K + firsts.index((h.document_id, h.ordinal)) + 1)
        assert h.score == pytest.approx(expected)


@given(st.lists(chunk_ids, min_size=1, max_size=10, unique=True))
def test_a_chunk_first_in_every_ranking_is_first_after_fusion(ranking) -> None:
    top = ranking[0]
    other = [top, *reversed(ranking[1:])]
    fused = fuse([[hit(*k) for k in ranking], [hit(*k) for k in other]], limit=10)
    assert (fused[0].document_id, fused[0].ordinal) == top


def test_fusion_keeps_the_first_rankings_snippet() -> None:
    fused = fuse([[hit("a", snippet="lexical")], [hit("a", snippet="semantic")]], limit=5)
    assert fused[0].snippet == "lexical"


# --- use cases with a stand-in provider ---------------------------------------------------

T = TenantId("ten_a")
# Words of one meaning share a dimension: "holiday" and "vacation" are the same to it.
CONCEPTS = {"vacation": 0, "holiday": 0, "leave": 0, "refund": 1, "money": 1, "invoice": 2}


class ConceptEmbedder:
    model = "concepts"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.down = False

    async def embed(self, texts):
        self.calls.append(list(texts))
        if self.down:
            raise ServiceUnavailable("the embeddings provider answered HTTP 503")
        out = []
        for text in texts:
            v = [0.01, 0.01, 0.01, 0.01]
            for word in text.lower().replace(".", " ").split():
                if word in CONCEPTS:
                    v[CONCEPTS[word]] += 1.0
            out.append(v)
        return out


class Clock:
    def now_ms(self) -> int:
        return 1


def document(id: str, title: str, content: str) -> KbDocument:
    return KbDocument(
        id=id, tenant_id=T, title=title, content=content, content_type=ContentType.MARKDOWN
    )


async def ingest(store, index, d: KbDocument) -> None:
    await store.save(d)
    await index(index_job(T, d.id, d.digest()))


async def test_indexing_embeds_each_chunk_once_and_hybrid_search_finds_synonyms() -> None:
    store, embedder = MemoryKnowledgeStore(), ConceptEmbedder()
    index = IndexDocument(store, Clock(), embedder=embedder, vectors=store, embed_batch=2)
    vacation = document("vac", "Time off", "Every employee gets 28 days of vacation.")
    refunds = document("ref", "Refunds", "A refund is paid within 30 days of the invoice.")
    for d in (vacation, refunds):
        await ingest(store, index, d)
    assert await store.has_vectors(T, "vac", vacation.digest(), "concepts")
    calls = len(embedder.calls)
    await index(index_job(T, "vac", vacation.digest()))  # redelivered: nothing embedded again
    assert len(embedder.calls) == calls

    hybrid = HybridKnowledgeSearch(store, store, embedder, pool=10)
    # "holiday" is in no document: lexical search finds nothing, the embedding finds vacation.
    assert await store.search(T, "holiday", limit=5) == []
    hits = await hybrid.search(T, "holiday", limit=5)
    assert hits[0].document_id == "vac"
    # Lexical and semantic agree on the refund document: it comes first.
    assert (await hybrid.search(T, "refund money", limit=5))[0].document_id == "ref"


async def test_search_falls_back_to_lexical_when_the_provider_is_down() -> None:
    store, embedder = MemoryKnowledgeStore(), ConceptEmbedder()
    index = IndexDocument(store, Clock(), embedder=embedder, vectors=store)
    await ingest(store, index, document("ref", "Refunds", "A refund is paid in 30 days."))
    embedder.down = True
    hybrid = HybridKnowledgeSearch(store, store, embedder)
    assert [h.document_id for h in await hybrid.search(T, "refund", limit=5)] == ["ref"]
    assert await hybrid.search(T, "holiday", limit=5) == []


async def test_an_embedding_outage_retries_only_the_embedding() -> None:
    store, embedder = MemoryKnowledgeStore(), ConceptEmbedder()
    index = IndexDocument(store, Clock(), embedder=embedder, vectors=store, last_attempt=3)
    d = document("vac", "Leave", "Vacation rules.")
    await store.save(d)
    embedder.down = True
    with pytest.raises(ServiceUnavailable):
        await index(index_job(T, "vac", d.digest()))
    status = await store.status(T, "vac")
    assert status.state.value == "indexed" and status.generation == 1  # lexical search has it
    assert not await store.has_vectors(T, "vac", d.digest(), "concepts")
    embedder.down = False
    retry = index_job(T, "vac", d.digest()).next_attempt()
    await index(retry)
    assert await store.has_vectors(T, "vac", d.digest(), "concepts")
    assert (await store.status(T, "vac")).generation == 1  # indexed once
