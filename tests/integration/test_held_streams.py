"""Held streams under pressure, over real sockets (uvicorn in the test's own loop): more streams
at once than the pools have connections all complete with every event, and a start that waits
too long for its turn is refused with a 503 that says when to come back, is logged and is
counted."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from dishka import Provider, Scope, provide

from adapters.memory.journal import TransactionalRunJournal
from application.conversation.ports import RunJournal
from application.ports import SchemaMigrator, UnitOfWork
from application.tenancy.use_cases import EnsureDemoTenant
from domain.conversation.model import Message, Run
from entrypoints.http.app import create_app
from entrypoints.ioc.container import make_container
from entrypoints.settings import load_settings
from tests.integration.test_http_api import parse_sse
from tests.pg import drop_database, fresh_database, pg_template  # noqa: F401 - fixture
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis

METRICS_TOKEN = "metrics-token-for-tests"


@dataclass
class Served:
    base: str
    key: str
    container: object


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(env: dict[str, str], *providers: Provider) -> AsyncIterator[Served]:
    settings = load_settings({**env, "SBA_TELEMETRY__METRICS_TOKEN": METRICS_TOKEN})
    setup = make_container(settings)
    try:
        await (await setup.get(SchemaMigrator)).upgrade()
        issued = await (await setup.get(EnsureDemoTenant))()
        assert issued is not None
    finally:
        await setup.close()
    app = create_app(settings, *providers)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await asyncio.sleep(0.01)  # polling for readiness, not hiding a race
        yield Served(f"http://127.0.0.1:{port}", issued.plaintext, app.state.dishka_container)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def run_body(run_id: str, tokens: int, delay_ms: int) -> dict:
    return {
        "threadId": f"th-{run_id}",
        "runId": run_id,
        "messages": [{"id": f"u-{run_id}", "role": "user", "content": "go"}],
        "forwardedProps": {"bench": {"tokens": tokens, "delay_ms": delay_ms}},
    }


async def start(
    client: httpx.AsyncClient, served: Served, run_id: str, tokens: int = 3, delay_ms: int = 0
) -> httpx.Response:
    return await client.post(
        f"{served.base}/v1/agents/assistant/runs",
        content=json.dumps(run_body(run_id, tokens, delay_ms)),
        headers={
            "Authorization": f"Bearer {served.key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        },
    )


def tokens_of(response: httpx.Response) -> list[str]:
    frames = parse_sse(response.text)
    assert frames[-1][1]["type"] == "RUN_FINISHED", response.text[-500:]
    return [d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT"]


class HeldStarts(TransactionalRunJournal):
    """Records runs like any journal, except that a run whose id starts with ``held`` waits
    for ``release`` before it is recorded (it holds its place in the start queue meanwhile)."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def record_start(self, run: Run, messages: Sequence[Message]) -> None:
        if run.id.startswith("held"):
            self.entered.set()
            await self.release.wait()
        await super().record_start(run, messages)


class HeldStartsProvider(Provider):
    scope = Scope.APP

    @provide
    def held(self, uow: UnitOfWork) -> HeldStarts:
        return HeldStarts(uow)

    @provide
    def journal(self, held: HeldStarts) -> RunJournal:
        return held


async def test_a_start_that_waits_too_long_for_its_turn_is_refused_logged_and_counted(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="sba")
    env = {
        "SBA_DATA_DIR": str(tmp_path),
        "SBA_LLM__LOADTEST": "true",
        "SBA_HTTP__START_CONCURRENCY": "1",
        "SBA_HTTP__START_QUEUE_TIMEOUT_S": "0.2",
    }
    async with serve(env, HeldStartsProvider()) as served:
        held = await served.container.get(HeldStarts)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(start(client, served, "held-1"))
            await asyncio.wait_for(held.entered.wait(), 10)
            try:
                await refused_while_held(client, served, caplog)
            finally:
                held.release.set()
            assert tokens_of(await first) == ["tok0 ", "tok1 ", "tok2"]
            # The refused start took no place: the next one goes straight in.
            assert tokens_of(await start(client, served, "after-1")) == ["tok0 ", "tok1 ", "tok2"]


async def refused_while_held(client: httpx.AsyncClient, served: Served, caplog) -> None:
    refused = await start(client, served, "queued-1")
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["code"] == "server_busy"
    assert any(
        r.levelno == logging.WARNING and "run start queue" in r.getMessage() for r in caplog.records
    )
    metrics = await client.get(
        f"{served.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert 'sba_run_starts_total{admission="refused"} 1.0' in metrics.text
    assert 'sba_http_unavailable_total{code="server_busy"} 1.0' in metrics.text


async def test_more_held_streams_than_pooled_connections_all_complete_with_every_event(
    request,
) -> None:
    require_redis()
    url, name = await fresh_database(request.getfixturevalue("pg_template"))
    prefix = new_prefix()
    env = {
        "SBA_DATABASE_URL": url,
        "SBA_REDIS_URL": REDIS_URL,
        "SBA_REDIS__KEY_PREFIX": prefix,
        "SBA_LLM__LOADTEST": "true",
        # One database connection, a journal connection and two Redis connections for all
        # of them; the limiter refuses (503) rather than admits unchecked when Redis fails.
        "SBA_POSTGRES__POOL_SIZE": "1",
        "SBA_POSTGRES__MAX_OVERFLOW": "0",
        "SBA_POSTGRES__JOURNAL_CONNECTIONS": "1",
        "SBA_REDIS__MAX_CONNECTIONS": "2",
        "SBA_RATE_LIMIT__FAIL_MODE": "closed",
        "SBA_RATE_LIMIT__DEFAULT_PER_MINUTE": "100000",
        "SBA_RATE_LIMIT__CONCURRENT_RUNS": "1000",
        "SBA_HTTP__HEARTBEAT_S": "0.2",
    }
    streams = 40
    try:
        async with serve(env) as served:
            limits = httpx.Limits(max_connections=streams)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                answers = await asyncio.gather(
                    *(
                        start(client, served, f"h-{uuid.uuid4().hex[:8]}", tokens=5, delay_ms=20)
                        for _ in range(streams)
                    )
                )
        assert [a.status_code for a in answers] == [200] * streams, [
            a.text for a in answers if a.status_code != 200
        ][:1]
        expected = ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4"]
        assert all(tokens_of(a) == expected for a in answers)
    finally:
        await drop_database(name)
        await drop_prefix(REDIS_URL, prefix)


@pytest.fixture(autouse=True)
def _quiet_uvicorn() -> None:
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
