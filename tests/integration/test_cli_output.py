"""The CLI's output read by other programs: a reader that stops early (``sba dlq list | head``)
ends the listing quietly."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_listing_whose_reader_has_gone_ends_quietly(tmp_path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader left before anything was written, as `| head -0` does
    try:
        done = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli.main", "dlq", "list"],
            env={**os.environ, "PYTHONPATH": "src", "SBA_DATA_DIR": str(tmp_path)},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 0
