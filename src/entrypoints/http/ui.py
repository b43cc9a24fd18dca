"""The chat page (``/``) and the first-start page (``/welcome``): static files shipped in the
package, read once, served with no build step and nothing from another origin. Their scripts
speak to the API like any other client (AG-UI runs, REST), with the key the person enters."""

from __future__ import annotations

import hashlib
from importlib import resources

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    """Every shipped asset: its bytes, content type and ETag."""
    folder = resources.files(__package__).joinpath("static")
    assets = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[entry.name] = (body, _TYPES[suffix], etag)
    return assets


_ASSETS = _load()


def _asset(request: Request, name: str) -> Response[bytes]:
    found = _ASSETS.get(name)
    if found is None:
        raise NotFoundException(f"no asset {name}")
    body, media_type, etag = found
    # Revalidated on every load: a new release is seen at once, an unchanged file costs a 304.
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@get("/", include_in_schema=False)
async def chat_page(request: Request) -> Response[bytes]:
    return _asset(request, "index.html")


@get("/welcome", include_in_schema=False)
async def welcome_page(request: Request) -> Response[bytes]:
    return _asset(request, "welcome.html")


@get("/ui/{name:str}", include_in_schema=False)
async def ui_asset(request: Request, name: FromPath[str]) -> Response[bytes]:
    return _asset(request, name)


UI_ROUTES = [chat_page, welcome_page, ui_asset]
