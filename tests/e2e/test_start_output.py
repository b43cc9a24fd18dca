"""What an operator sees on the terminal of `sba serve`: the banner first, with no job chatter
before it, then one JSON access-log line per request."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.e2e.conftest import ROOT, free_port, stop_server

pytestmark = pytest.mark.e2e


def test_the_banner_comes_first_and_each_request_is_logged(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SBA_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "entrypoints.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        before = []
        while not (line := lines.get(timeout=60)).startswith("SBA listening on"):
            before.append(line)
        # The banner: the demo key, how to stream a run; no log line (JSON) among it.
        assert not [b for b in before if b.startswith("{")], before
        url = f"http://127.0.0.1:{port}/healthz"
        request = urllib.request.Request(url, headers={"X-Request-ID": "first-look"})
        for _ in range(50):  # the banner is printed just before the server listens
            try:
                urllib.request.urlopen(request, timeout=5).close()
                break
            except OSError:
                threading.Event().wait(0.1)
        while True:
            entry = json.loads(lines.get(timeout=30))
            if entry["logger"] == "sba.access" and entry.get("request_id") == "first-look":
                break
        assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/healthz", 200)
        assert entry["duration_ms"] >= 0
    finally:
        stop_server(process)  # type: ignore[arg-type]
