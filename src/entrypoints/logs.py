"""Log set-up: JSON lines on stderr (the default) or plain text for a terminal."""

from __future__ import annotations

import logging
import sys

from adapters.observability.logs import JsonFormatter


class _Worker(logging.Filter):
    """Names the server process (one of several) on every record."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is written, not when logging was
    set up: a stream replaced since (by a test runner, a daemonising wrapper) is not written
    to after it was closed, by the access log's thread least of all."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        return None


def configure_logging(level: str, *, json: bool, worker: int | None = None) -> None:
    """``worker``: this process's id among several serving one port, added to every record."""
    handler = _StderrHandler()
    text = "%(levelname)s %(name)s: %(message)s"
    if worker is not None:
        handler.addFilter(_Worker(worker))
        text = "%(levelname)s [worker %(worker)s] %(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(text))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # taskiq announces every job it starts; ours log what matters about them.
    for noisy in ("uvicorn.access", "alembic", "taskiq.receiver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
