"""Turning a person's question into search terms."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = "a an and are as at be by can do does for from how i in is it me my of on or our so "
_STOP += "that the this to was we what when where which who why will with you your"
STOP_WORDS = frozenset(_STOP.split(" "))
MAX_TERMS = 12


def search_terms(query: str) -> list[str]:
    """Lower-cased words of two or more characters, stop words dropped (unless nothing else is
    left), duplicates removed, at most ``MAX_TERMS``."""
    words = [w.lower() for w in _WORD.findall(query) if len(w) >= 2]
    kept = [w for w in words if w not in STOP_WORDS] or words
    return list(dict.fromkeys(kept))[:MAX_TERMS]


_SUFFIXES = ("ing", "ies", "es", "ed", "ly", "s")


def stem(term: str) -> str:
    """A crude English stem, for stores without a stemming index: matching by this prefix finds
    "refund" for "refunds" and "ship" for "shipping"."""
    for suffix in _SUFFIXES:
        if term.endswith(suffix) and len(term) - len(suffix) >= 3:
            return term[: -len(suffix)]
    return term
