"""Log records go to the stderr of the moment they are written, not the one of set-up."""

from __future__ import annotations

import io
import logging
import sys

from entrypoints.logs import configure_logging


def test_records_follow_a_replaced_stderr_and_never_reach_a_closed_one(monkeypatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        configure_logging("INFO", json=False)
        logging.getLogger("sba.test").warning("one")
        first.close()  # as a test runner closes the stream it captured with
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("sba.test").warning("two")
    finally:
        root = logging.getLogger()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert second.getvalue() == "WARNING sba.test: two\n"
