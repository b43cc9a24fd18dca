"""Markdown into HTML (markdown-it, CommonMark, raw HTML escaped) and into PDF (fpdf2, pure
Python, no browser).

The PDF embeds Fira Sans from the ``fontpkg-fira-sans`` package (static regular, bold, italic
and bold-italic faces, OFL): Latin with its extensions (Indonesian, Vietnamese, €, dashes,
curly quotes), Greek and Cyrillic. A character no face has is drawn as the font's missing
glyph, never replaced by another character; only the embedded glyphs are written (fpdf2
subsets the font)."""

from __future__ import annotations

import html
from importlib.resources import as_file, files

from fpdf import FPDF, FontFace, TextStyle
from markdown_it import MarkdownIt

_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>{title}</title></head>\n<body>\n{body}</body></html>\n"
)
FAMILY = "fira-sans"
_FACES = {
    "": "FiraSans-Regular.ttf",
    "B": "FiraSans-Bold.ttf",
    "I": "FiraSans-Italic.ttf",
    "BI": "FiraSans-BoldItalic.ttf",
}

# Code too is set in the embedded face: the core Courier knows only Latin-1.
_CODE_STYLES = {
    "code": FontFace(family=FAMILY),
    "pre": TextStyle(t_margin=4 + 7 / 30, font_family=FAMILY),
}


def _face_paths() -> dict[str, str]:
    """The faces' files on disk (a wheel installs them as plain files)."""
    root = files("fontpkg_fira_sans") / "files"
    paths = {}
    for style, name in _FACES.items():
        with as_file(root / name) as path:
            paths[style] = str(path)
    return paths


class MarkdownConverter:
    def __init__(self) -> None:
        self._md = MarkdownIt("commonmark", {"html": False}).enable("table")
        self._faces = _face_paths()

    def to_html(self, markdown: str, *, title: str) -> str:
        return _PAGE.format(title=html.escape(title), body=self._md.render(markdown))

    def to_pdf(self, markdown: str, *, title: str) -> bytes:
        body = self._md.render(markdown)
        pdf = FPDF()
        for style, path in self._faces.items():
            pdf.add_font(FAMILY, style=style, fname=path)
        pdf.set_title(title)
        pdf.set_creator("SBA")
        pdf.add_page()
        pdf.set_font(FAMILY, size=11)
        pdf.write_html(body, font_family=FAMILY, tag_styles=_CODE_STYLES)
        return bytes(pdf.output())
