"""Embedding vectors and hybrid ranking, in pure Python.

Vectors are stored unit-length as little-endian float32 bytes, so cosine similarity is a dot
product. Hybrid ranking fuses a lexical and a semantic ranking by reciprocal rank fusion: each
hit scores ``sum(1 / (k + rank))`` over the rankings it appears in (rank from 1), which needs
no calibration between BM25 scores and cosines and favours what both rankings agree on."""

from __future__ import annotations

import math
import operator
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import replace

from domain.errors import InvariantViolated
from domain.knowledge.model import SearchHit

RRF_K = 60
_LITTLE = sys.byteorder == "little"


def normalize(vector: Sequence[float]) -> list[float]:
    """The vector scaled to length 1; a zero, empty or non-finite vector is refused."""
    if not vector:
        raise InvariantViolated("an embedding has at least one dimension")
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise InvariantViolated("an embedding must be finite and not all zeros")
    return [x / norm for x in vector]


def pack(vector: Sequence[float]) -> bytes:
    """Unit-length float32, little-endian."""
    values = array("f", normalize(vector))
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        values.byteswap()
    return values.tobytes()


def unpack(data: bytes) -> array[float]:
    if len(data) % 4:
        raise InvariantViolated("a packed embedding is a whole number of float32s")
    values = array("f")
    values.frombytes(data)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        values.byteswap()
    return values


def similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors of the same length; -1 when they differ in
    length (vectors of another model never match)."""
    if len(a) != len(b):
        return -1.0
    return float(sum(map(operator.mul, a, b)))


def dimensions(data: bytes) -> int:
    return len(data) // struct.calcsize("f")


def fuse(rankings: Sequence[Sequence[SearchHit]], *, limit: int, k: int = RRF_K) -> list[SearchHit]:
    """Reciprocal rank fusion of rankings (each best first) of chunks, identified by
    (document, ordinal). Each chunk appears once, with the first ranking's snippet that has it,
    and its fused score; best first, ties by document and ordinal; at most ``limit``."""
    scores: dict[tuple[str, int], float] = {}
    first: dict[tuple[str, int], SearchHit] = {}
    for ranking in rankings:
        seen: set[tuple[str, int]] = set()
        for hit in ranking:
            key = (hit.document_id, hit.ordinal)
            if key in seen:  # a repeat within one ranking counts once, at its best rank
                continue
            seen.add(key)
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + len(seen))
            first.setdefault(key, hit)
    order = sorted(scores, key=lambda key: (-scores[key], key))
    return [replace(first[key], score=scores[key]) for key in order[: max(limit, 0)]]
