"""Markdown into HTML (markdown-it, CommonMark, raw HTML escaped) and into PDF (fpdf2, pure
Python, no browser). The PDF uses the core Helvetica font, which covers Latin-1; other
characters are replaced."""

from __future__ import annotations

import html

from fpdf import FPDF
from markdown_it import MarkdownIt

_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>{title}</title></head>\n<body>\n{body}</body></html>\n"
)


class MarkdownConverter:
    def __init__(self) -> None:
        self._md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def to_html(self, markdown: str, *, title: str) -> str:
        return _PAGE.format(title=html.escape(title), body=self._md.render(markdown))

    def to_pdf(self, markdown: str, *, title: str) -> bytes:
        body = self._md.render(markdown)
        pdf = FPDF()
        pdf.set_title(_latin1(title))
        pdf.set_creator("SBA")
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        pdf.write_html(_latin1(body))
        return bytes(pdf.output())


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")
