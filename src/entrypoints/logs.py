"""Log set-up: JSON lines on stderr (the default) or plain text for a terminal."""

from __future__ import annotations

import logging
import sys

from adapters.observability.logs import JsonFormatter


def configure_logging(level: str, *, json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # taskiq announces every job it starts; ours log what matters about them.
    for noisy in ("uvicorn.access", "alembic", "taskiq.receiver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
