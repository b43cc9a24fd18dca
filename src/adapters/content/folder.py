"""A folder of Markdown files as a content source (the embedded default): each ``*.md`` file,
front matter (``---``, ``key: value`` lines, ``---``) then the body. The ref is the file's path
below the folder, without ``.md``."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from application.content.ports import ContentDocument, ContentPage
from application.errors import ServiceUnavailable

log = logging.getLogger("sba.content")

_WORD = re.compile(r"\w+", re.UNICODE)


def parse_markdown(ref: str, text: str) -> ContentDocument:
    meta: dict[str, str] = {}
    body = text
    if text.startswith("---\n"):
        head, sep, rest = text[4:].partition("\n---\n")
        if sep:
            body = rest
            for line in head.splitlines():
                key, colon, value = line.partition(":")
                if colon:
                    meta[key.strip().lower()] = value.strip().strip('"')
    return ContentDocument(
        ref=ref,
        title=meta.get("title") or ref.rsplit("/", 1)[-1],
        markdown=body.strip(),
        slug=meta.get("slug", ref.rsplit("/", 1)[-1]),
        updated_at=meta.get("updated", ""),
    )


class FolderContentSource:
    def __init__(self, root: Path | str, *, name: str = "folder") -> None:
        self._root = Path(root)
        self.name = name

    def _refs(self) -> list[str]:
        if not self._root.is_dir():
            raise ServiceUnavailable(f"the content folder {self._root} does not exist")
        return sorted(
            p.relative_to(self._root).with_suffix("").as_posix()
            for p in self._root.rglob("*.md")
            if p.is_file()
        )

    def _read(self, ref: str) -> ContentDocument | None:
        path = (self._root / f"{ref}.md").resolve()
        # A ref cannot climb out of the folder.
        if self._root.resolve() not in path.parents or not path.is_file():
            return None
        try:
            return parse_markdown(ref, path.read_text(encoding="utf-8"))
        except OSError as exc:
            log.warning("cannot read content %s: %s", ref, exc)
            raise ServiceUnavailable(f"cannot read {ref}") from exc

    async def get(self, ref: str) -> ContentDocument | None:
        return await asyncio.to_thread(self._read, ref)

    async def page(self, *, cursor: str | None = None, limit: int = 50) -> ContentPage:
        def page() -> ContentPage:
            refs = [r for r in self._refs() if cursor is None or r > cursor]
            chosen = refs[:limit]
            docs = [d for r in chosen if (d := self._read(r)) is not None]
            return ContentPage(items=docs, next_cursor=chosen[-1] if len(refs) > limit else None)

        return await asyncio.to_thread(page)

    async def search(self, query: str, *, limit: int = 5) -> list[ContentDocument]:
        terms = {w.lower() for w in _WORD.findall(query)}
        if not terms:
            return []

        def run() -> list[ContentDocument]:
            scored = []
            for ref in self._refs():
                doc = self._read(ref)
                if doc is None:
                    continue
                words = [w.lower() for w in _WORD.findall(f"{doc.title} {doc.markdown}")]
                score = sum(1 for w in words if w in terms)
                if score:
                    scored.append((-score, ref, doc))
            scored.sort(key=lambda s: (s[0], s[1]))
            return [d for *_, d in scored[:limit]]

        return await asyncio.to_thread(run)
