"""Artifacts in a local folder (the embedded default). Writes go to a temporary file that is
renamed into place, so a reader never sees half an artifact."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from pathlib import Path

from application.errors import InvalidInput, ServiceUnavailable
from application.render.ports import Blob

log = logging.getLogger("sba.blob")

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class LocalBlobStore:
    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
            raise InvalidInput(f"{key!r} is not a valid artifact key")
        return self._root / key

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            path.with_name(path.name + ".type").write_text(content_type)
            os.replace(tmp, path)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            log.warning("cannot store artifact %s: %s", key, exc)
            raise ServiceUnavailable("the artifact store is unavailable") from exc

    async def get(self, key: str) -> Blob | None:
        path = self._path(key)

        def read() -> Blob | None:
            if not path.is_file():
                return None
            kind = path.with_name(path.name + ".type")
            content_type = kind.read_text() if kind.is_file() else "application/octet-stream"
            return Blob(path.read_bytes(), content_type)

        try:
            return await asyncio.to_thread(read)
        except OSError as exc:
            log.warning("cannot read artifact %s: %s", key, exc)
            raise ServiceUnavailable("the artifact store is unavailable") from exc

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.with_name(path.name + ".type").unlink(missing_ok=True)
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot delete artifact %s: %s", key, exc)
            raise ServiceUnavailable("the artifact store is unavailable") from exc
        return True
