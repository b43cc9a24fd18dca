"""Two server processes on one Postgres and one Redis: a client that drops its stream on one
instance resumes on the other without loss or duplication, and both instances enforce one
global rate limit and one run cap."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import ROOT, free_port, sba, start_server, stop_server
from tests.pg import ADMIN_DSN, _run, _url, create_database, drop_database
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    demo_key: str
    trial_key: str
    solo_key: str


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    require_redis()
    name = f"sba_pair_{uuid.uuid4().hex[:10]}"

    _run(lambda: create_database(name))
    prefix = new_prefix()
    logs = tmp_path_factory.mktemp("sba-pair")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": str(logs),
        "SBA_DATABASE_URL": _url(ADMIN_DSN, name),
        "SBA_REDIS_URL": REDIS_URL,
        "SBA_REDIS__KEY_PREFIX": prefix,
        "SBA_LLM__LOADTEST": "true",
        "SBA_HTTP__HEARTBEAT_S": "0.2",
        "SBA_RATE_LIMIT__BURST_RATIO": "1.0",
        "SBA_RATE_LIMIT__PLANS": json.dumps(
            {"trial": {"per_minute": 10}, "solo": {"concurrent_runs": 1}}
        ),
        "SBA_RATE_LIMIT__TENANTS": json.dumps({"trial": "trial", "solo": "solo"}),
    }
    sba("db", "upgrade", env=env)
    port_a, port_b = free_port(), free_port()
    a = start_server(env, port_a, logs / "a.log")
    try:
        b = start_server(env, port_b, logs / "b.log")
        try:
            demo = sba("apikey", "create", "--tenant", "demo", env=env).stdout.split()[-1]
            keys = []
            for slug in ("trial", "solo"):
                sba("tenant", "create", slug, env=env)
                keys.append(sba("apikey", "create", "--tenant", slug, env=env).stdout.split()[-1])
            yield Pair(f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}", demo, *keys)
        finally:
            stop_server(b)
    finally:
        stop_server(a)

        async def drop() -> None:
            await drop_database(name)
            await drop_prefix(REDIS_URL, prefix)

        _run(drop)


def body(run_id: str, tokens: int = 40, delay_ms: int = 10) -> dict:
    return {
        "threadId": f"th-{run_id}",
        "runId": run_id,
        "messages": [{"id": f"u-{run_id}", "role": "user", "content": "go"}],
        "forwardedProps": {"bench": {"tokens": tokens, "delay_ms": delay_ms}},
    }


def frames(raw: str) -> list[tuple[int, dict]]:
    out = []
    for block in raw.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((int(lines["id"]), json.loads(lines["data"])))
    return out


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


async def first_frames(client: httpx.AsyncClient, url: str, key: str, payload: dict, n: int):
    """Reads ``n`` frames of a new run's stream, then drops the connection."""
    got: list[tuple[int, dict]] = []
    buffer = ""
    async with client.stream("POST", url, json=payload, headers=auth(key)) as response:
        assert response.status_code == 200
        async for text in response.aiter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                got.extend(frames(block + "\n\n"))
            if len(got) >= n:
                break
    return got


async def test_a_client_resumes_on_the_other_instance_without_loss_or_duplication(pair) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        head = await first_frames(
            client, f"{pair.a}/v1/agents/assistant/runs", pair.demo_key, body("hop-1"), 6
        )
        assert head[0][1]["type"] == "RUN_STARTED"
        last = head[-1][0]
        rest = await client.get(
            f"{pair.b}/v1/runs/hop-1/events",
            headers=auth(pair.demo_key, **{"Last-Event-ID": str(last)}),
        )
        assert rest.status_code == 200
        tail = frames(rest.text)
        ids = [i for i, _ in head + tail]
        assert ids == list(range(1, len(ids) + 1))
        assert tail[-1][1]["type"] == "RUN_FINISHED"
        text = "".join(d["delta"] for _, d in head + tail if d["type"] == "TEXT_MESSAGE_CONTENT")
        assert text.split() == [f"tok{i}" for i in range(40)]
        # The whole run read from the other instance is the same stream.
        whole = await client.get(f"{pair.b}/v1/runs/hop-1/events", headers=auth(pair.demo_key))
        assert frames(whole.text) == head + tail


async def test_two_instances_enforce_one_global_limit(pair) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        codes = []
        for i in range(20):
            base = pair.a if i % 2 else pair.b
            response = await client.get(f"{base}/v1/runs/none", headers=auth(pair.trial_key))
            codes.append(response.status_code)
        assert codes.count(404) == 10, codes
        assert codes.count(429) == 10
        assert codes[:10] == [404] * 10


async def test_one_run_cap_holds_across_instances_and_frees_when_the_run_ends(pair) -> None:
    start_a = f"{pair.a}/v1/agents/assistant/runs"
    start_b = f"{pair.b}/v1/agents/assistant/runs"
    async with httpx.AsyncClient(timeout=30) as client:
        slow = body("cap-1", tokens=60, delay_ms=10)
        async with client.stream("POST", start_a, json=slow, headers=auth(pair.solo_key)) as run:
            assert run.status_code == 200
            refused = await client.post(start_b, json=body("cap-2"), headers=auth(pair.solo_key))
            assert refused.status_code == 429
            assert refused.json()["code"] == "concurrency_limited"
            assert refused.headers["retry-after"] == "1"
            finished = frames((await run.aread()).decode())
        assert finished[-1][1]["type"] == "RUN_FINISHED"
        # The run gave its place back before its client saw it end.
        again = await client.post(start_b, json=body("cap-3", 3, 0), headers=auth(pair.solo_key))
        assert again.status_code == 200
        assert frames(again.text)[-1][1]["type"] == "RUN_FINISHED"


async def test_a_run_whose_client_disconnected_frees_its_place_when_it_finishes(pair) -> None:
    start_a = f"{pair.a}/v1/agents/assistant/runs"
    async with httpx.AsyncClient(timeout=30) as client:
        head = await first_frames(client, start_a, pair.solo_key, body("gone-1", 30, 10), 2)
        assert head[0][1]["type"] == "RUN_STARTED"
        # The client is gone; the run goes on and still holds the tenant's one place.
        refused = await client.post(start_a, json=body("gone-2"), headers=auth(pair.solo_key))
        assert refused.status_code == 429
        # Follow the run to its end from the other instance, as a returning client would.
        rest = await client.get(
            f"{pair.b}/v1/runs/gone-1/events",
            headers=auth(pair.solo_key, **{"Last-Event-ID": str(head[-1][0])}),
        )
        assert frames(rest.text)[-1][1]["type"] == "RUN_FINISHED"
        again = await client.post(start_a, json=body("gone-3", 2, 0), headers=auth(pair.solo_key))
        assert again.status_code == 200
