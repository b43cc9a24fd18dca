"""No orphaned runs: ``kill -9`` of the instance executing a run ends the run with RUN_ERROR
``instance_lost`` for every client following it, and its record leaves ``pending``, whether
another instance takes over (Postgres + Redis, two processes) or the same instance restarts
(embedded SQLite, one process)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, free_port, sba, start_server, stop_server
from tests.e2e.test_redis_instances import auth, body, first_frames, frames
from tests.pg import ADMIN_DSN, _run, _url, create_database, drop_database
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis

pytestmark = pytest.mark.e2e

# Short leases keep the test quick; production defaults are 10 s and 2 s.
FAST_RECOVERY = {"SBA_RUNS__LEASE_S": "1.5", "SBA_RUNS__SWEEP_S": "0.3"}


def base_env(data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": str(data),
        "SBA_LLM__LOADTEST": "true",
        "SBA_HTTP__HEARTBEAT_S": "0.2",
        **FAST_RECOVERY,
    }


def kill(process) -> None:
    process.kill()  # SIGKILL: no drain, no shutdown hook
    process.wait()


async def follow_to_the_end(client: httpx.AsyncClient, url: str, key: str, after: int):
    response = await client.get(url, headers=auth(key, **{"Last-Event-ID": str(after)}))
    assert response.status_code == 200, response.text
    return frames(response.text)


async def test_a_run_of_a_killed_instance_ends_as_lost_on_the_other(tmp_path) -> None:
    require_redis()
    name = f"sba_loss_{uuid.uuid4().hex[:10]}"

    _run(lambda: create_database(name))
    prefix = new_prefix()
    env = {
        **base_env(tmp_path),
        "SBA_DATABASE_URL": _url(ADMIN_DSN, name),
        "SBA_REDIS_URL": REDIS_URL,
        "SBA_REDIS__KEY_PREFIX": prefix,
    }
    a = b = None
    try:
        sba("db", "upgrade", env=env)
        port_a, port_b = free_port(), free_port()
        a = start_server(env, port_a, tmp_path / "a.log")
        b = start_server(env, port_b, tmp_path / "b.log")
        key = sba("apikey", "create", "--tenant", "demo", env=env).stdout.split()[-1]
        async with httpx.AsyncClient(timeout=60) as client:
            # A run that would take 30 s: its instance is killed after its first events.
            head = await first_frames(
                client,
                f"http://127.0.0.1:{port_a}/v1/agents/assistant/runs",
                key,
                body("doomed", tokens=300, delay_ms=100),
                5,
            )
            kill(a)
            killed_at = time.monotonic()
            tail = await follow_to_the_end(
                client, f"http://127.0.0.1:{port_b}/v1/runs/doomed/events", key, head[-1][0]
            )
            recovered_in = time.monotonic() - killed_at
            ids = [i for i, _ in head + tail]
            assert ids == sorted(set(ids)), "events repeated or out of order"
            end = tail[-1][1]
            assert (end["type"], end["code"]) == ("RUN_ERROR", "instance_lost")
            assert recovered_in < 30  # the stream ended: it did not wait until it expired
            run = (
                await client.get(f"http://127.0.0.1:{port_b}/v1/runs/doomed", headers=auth(key))
            ).json()
            assert (run["status"], run["errorCode"]) == ("failed", "instance_lost")
            # Runs on the surviving instance are untouched by the sweep.
            fine = await client.post(
                f"http://127.0.0.1:{port_b}/v1/agents/assistant/runs",
                json=body("fine", tokens=3, delay_ms=0),
                headers=auth(key),
            )
            assert frames(fine.text)[-1][1]["type"] == "RUN_FINISHED"
    finally:
        for process in (a, b):
            if process is not None and process.poll() is None:
                stop_server(process)

        async def drop() -> None:
            await drop_database(name)
            await drop_prefix(REDIS_URL, prefix)

        _run(drop)


async def test_a_restarted_single_instance_ends_the_runs_it_left_behind(tmp_path) -> None:
    env = base_env(tmp_path)
    port = free_port()
    server = start_server(env, port, tmp_path / "first.log")
    try:
        key = sba("apikey", "create", "--tenant", "demo", env=env).stdout.split()[-1]
        async with httpx.AsyncClient(timeout=60) as client:
            head = await first_frames(
                client,
                f"http://127.0.0.1:{port}/v1/agents/assistant/runs",
                key,
                body("left", tokens=300, delay_ms=100),
                4,
            )
            assert head[0][1]["type"] == "RUN_STARTED"
        kill(server)
        server = start_server(env, port, tmp_path / "second.log")
        async with httpx.AsyncClient(timeout=60) as client:
            run = await client.get(f"http://127.0.0.1:{port}/v1/runs/left", headers=auth(key))
            assert (run.json()["status"], run.json()["errorCode"]) == ("failed", "instance_lost")
            replay = await client.get(
                f"http://127.0.0.1:{port}/v1/runs/left/events", headers=auth(key)
            )
            # Its live log died with the process: the stream is replayed from the store.
            blocks = [b for b in replay.text.split("\n\n") if b.startswith("data: ")]
            end = json.loads(blocks[-1].removeprefix("data: "))
            assert (end["type"], end["code"]) == ("RUN_ERROR", "instance_lost")
    finally:
        stop_server(server)


def test_recovery_settings_are_checked() -> None:
    from entrypoints.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="SBA_RUNS__LEASE_S"):
        load_settings({"SBA_RUNS__LEASE_S": "0.1"})
    load_settings(FAST_RECOVERY)  # the test's own settings are valid


async def test_sigterm_stops_taking_runs_and_drains_the_ones_it_has(tmp_path) -> None:
    import signal

    env = base_env(tmp_path)
    port = free_port()
    server = start_server(env, port, tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        key = sba("apikey", "create", "--tenant", "demo", env=env).stdout.split()[-1]
        async with httpx.AsyncClient(timeout=60) as client:
            # A run of about two seconds, well inside the shutdown grace period.
            payload = body("draining", tokens=20, delay_ms=100)
            async with client.stream(
                "POST", f"{base}/v1/agents/assistant/runs", json=payload, headers=auth(key)
            ) as response:
                assert response.status_code == 200
                raw, signalled = b"", False
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if not signalled and raw.count(b"\n\n") >= 3:
                        server.send_signal(signal.SIGTERM)
                        signalled = True
            got = frames(raw.decode())
            assert got[-1][1]["type"] == "RUN_FINISHED"  # the run it had was finished
            with pytest.raises(httpx.TransportError):  # and no new one is taken
                await client.post(
                    f"{base}/v1/agents/assistant/runs",
                    json=body("late", tokens=1, delay_ms=0),
                    headers=auth(key),
                )
        # It exits by itself once drained (uvicorn ends by re-raising the signal it handled).
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        server = start_server(env, port, tmp_path / "again.log")
        async with httpx.AsyncClient(timeout=60) as client:
            run = (await client.get(f"{base}/v1/runs/draining", headers=auth(key))).json()
            assert run["status"] == "succeeded"
    finally:
        if server.poll() is None:
            stop_server(server)
