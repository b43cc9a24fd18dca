"""The access log: one record per request on logger ``sba.access`` (method, path, status,
duration, request id, tenant), in whatever format the process logs (JSON lines by default).

A request pays for a tuple put on a queue; a thread of its own turns the tuples into records
and writes them, so encoding and the write to stderr never hold up an answer. The query
string is left out: download links carry their signature there."""

from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger("sba.access")

_Entry = tuple[str, str, int, float, str, str, str]
_STOP = None


def _printable(text: str) -> str:
    """A path as sent may hold control characters (``%0A``): escaped, they cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class AccessLog:
    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(
        self,
        *,
        method: str,
        path: str,
        status: int,
        duration_s: float,
        request_id: str,
        tenant: str,
        trace_id: str = "",
    ) -> None:
        if self._thread is None:
            self._start()
        self._queue.put((method, path, status, duration_s, request_id, tenant, trace_id))

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="sba-access-log", daemon=True
                )
                self._thread.start()

    def _drain(self) -> None:
        while (entry := self._queue.get()) is not _STOP:
            method, path, status, duration_s, request_id, tenant, trace_id = entry
            path = _printable(path)
            extra: dict[str, object] = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_s * 1000, 2),
                "request_id": request_id,
            }
            if tenant:
                extra["tenant"] = tenant
            if trace_id:
                extra["trace_id"] = trace_id
            self._log.info("%s %s %d %.1f ms", method, path, status, duration_s * 1000, extra=extra)

    def close(self) -> None:
        """Writes what is queued, then stops the thread (a later record starts it again)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
