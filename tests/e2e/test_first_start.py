"""The README's promise: `sba serve` on a fresh data directory seeds the demo tenant, prints
its key and a curl line, and that very curl line streams a run."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT, free_port, stop_server
from tests.support import unavailable

pytestmark = pytest.mark.e2e


def start(data_dir: str, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SBA_DATA_DIR": data_dir}
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # the server prints its banner before it listens
        lines.append(line.rstrip("\n"))
        if line.startswith("SBA listening on"):
            break
    return process, lines


def test_first_start_prints_a_key_and_a_curl_line_that_streams_a_run(tmp_path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        unavailable("curl is not installed")
    port = free_port()
    process, lines = start(str(tmp_path), port)
    try:
        keys = [line.strip() for line in lines if line.strip().startswith("sba_")]
        assert len(keys) == 1, lines
        commands = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(commands) == 1 and keys[0] in commands[0]
        # The server answers health checks before the banner's curl line is run.
        args = shlex.split(commands[0])
        args[args.index("-N")] = "-sN"
        args.insert(1, "--retry-connrefused")
        args[1:1] = ["--retry", "20", "--retry-delay", "0"]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        frames = [line for line in out.stdout.splitlines() if line.startswith("data: ")]
        assert '"type":"RUN_STARTED"' in frames[0]
        assert '"type":"RUN_FINISHED"' in frames[-1]
    finally:
        stop_server(process)  # type: ignore[arg-type]

    # A second start on the same data reuses the demo tenant and prints no new key.
    process, lines = start(str(tmp_path), free_port())
    try:
        assert not [line for line in lines if line.strip().startswith("sba_")]
    finally:
        stop_server(process)  # type: ignore[arg-type]
