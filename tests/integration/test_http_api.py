"""The HTTP API in-process (Litestar's test client) on the embedded defaults."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from ag_ui.core.events import Event as OfficialEvent
from dishka import Provider, Scope, provide
from litestar.testing import AsyncTestClient
from pydantic import TypeAdapter

from application.conversation.ports import ChatChunk, ChatModel, ChatRequest, TextChunk
from application.errors import Conflict, ModelError
from application.knowledge.use_cases import IngestDocument
from application.ports import SchemaMigrator
from application.tenancy.use_cases import CreateApiKey, CreateTenant, EnsureDemoTenant
from domain.tenancy.model import Role
from entrypoints.http.app import create_app
from entrypoints.ioc.container import make_container
from entrypoints.seed import seed_demo_knowledge
from entrypoints.settings import load_settings

official = TypeAdapter(OfficialEvent)


@dataclass
class Api:
    client: AsyncTestClient
    key: str
    container: Any

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def key_for(self, slug: str, role: Role = Role.MEMBER) -> str:
        with contextlib.suppress(Conflict):
            await (await self.container.get(CreateTenant))(slug, actor="test")
        return (await (await self.container.get(CreateApiKey))(slug, role, actor="test")).plaintext

    async def run(self, body: Mapping[str, Any], key: str | None = None, **headers: str):
        return await self.client.post(
            "/v1/agents/assistant/runs",
            content=json.dumps(body),
            headers={
                **self.auth(key),
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
                **headers,
            },
        )


def run_body(
    run_id: str = "r1", thread_id: str = "t1", text: str = "What can you do?", **extra: Any
) -> dict[str, Any]:
    return {
        "threadId": thread_id,
        "runId": run_id,
        "messages": [{"id": f"u-{run_id}", "role": "user", "content": text}],
        **extra,
    }


def parse_sse(raw: str) -> list[tuple[int | None, dict]]:
    assert "\r" not in raw, "frames must use LF only"
    out = []
    for block in raw.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        seq = data = None
        for line in block.split("\n"):
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        assert data is not None, block
        out.append((seq, data))
    return out


def types(frames: list[tuple[int | None, dict]]) -> list[str]:
    return [data["type"] for _, data in frames]


async def make_api(
    tmp_path, *providers: Provider, own_setup: bool = False, **env: str
) -> AsyncIterator[Api]:
    """The app on the embedded defaults plus ``env``, with the demo tenant seeded. With
    ``own_setup`` the test's own calls go through a container of their own: the app's clients
    (a Redis pool, say) belong to the app's event loop, which the test client runs apart."""
    settings = load_settings({"SBA_DATA_DIR": str(tmp_path), **env})
    app = create_app(settings, *providers)
    async with AsyncTestClient(app) as client:
        container = make_container(settings) if own_setup else app.state.dishka_container
        try:
            await (await container.get(SchemaMigrator)).upgrade()
            issued = await (await container.get(EnsureDemoTenant))()
            assert issued is not None
            await seed_demo_knowledge(await container.get(IngestDocument), issued.key.tenant_id)
            yield Api(client=client, key=issued.plaintext, container=container)
        finally:
            if own_setup:
                await container.close()


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path, SBA_LLM__LOADTEST="true"):
        yield a


async def test_a_run_streams_a_valid_agui_sequence_and_persists_the_answer(api: Api) -> None:
    response = await api.run(run_body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    kinds = types(frames)
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED"
    assert kinds.count("RUN_FINISHED") == 1 and "RUN_ERROR" not in kinds
    assert kinds[1:5] == ["STATE_SNAPSHOT", "STATE_DELTA", "STEP_STARTED", "TEXT_MESSAGE_START"]
    assert kinds[-3:-1] == ["TEXT_MESSAGE_END", "STEP_FINISHED"]
    assert [seq for seq, _ in frames] == list(range(1, len(frames) + 1))
    for _, data in frames:
        official.validate_python(data)
    assert frames[0][1]["threadId"] == "t1" and frames[0][1]["runId"] == "r1"
    text = "".join(d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT")
    assert "What can you do?" in text

    stored = await api.client.get("/v1/threads/t1/messages", headers=api.auth())
    assert [(m["role"], m["content"]) for m in stored.json()["messages"]] == [
        ("user", "What can you do?"),
        ("assistant", text),
    ]
    run = (await api.client.get("/v1/runs/r1", headers=api.auth())).json()
    assert run["status"] == "succeeded" and run["outputTokens"] > 0


async def test_protocol_v1_clients_get_an_outcome(api: Api) -> None:
    frames = parse_sse((await api.run(run_body(protocolVersion="1.0.0"))).text)
    assert frames[-1][1]["outcome"] == {"type": "success"}


async def test_the_load_test_model_streams_the_scripted_tokens(api: Api) -> None:
    body = run_body(forwardedProps={"bench": {"tokens": 5, "delay_ms": 0}})
    frames = parse_sse((await api.run(body)).text)
    deltas = [d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT"]
    assert "".join(deltas) == "tok0 tok1 tok2 tok3 tok4"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["title"] and body["detail"] and body["type"]
    return body


async def test_bad_json_is_a_400_problem(api: Api) -> None:
    response = await api.client.post(
        "/v1/agents/assistant/runs", content=b"{not json", headers=api.auth()
    )
    assert_problem(response, 400, "invalid_json")


async def test_an_unknown_field_is_a_422_problem_naming_it(api: Api) -> None:
    body = assert_problem(await api.run(run_body(threadID="typo")), 422, "validation_failed")
    assert "threadID" in body["detail"]


async def test_a_missing_required_field_is_a_422_problem(api: Api) -> None:
    body = assert_problem(
        await api.run({"threadId": "t", "messages": []}), 422, "validation_failed"
    )
    assert "runId" in body["detail"]


async def test_a_missing_key_is_a_401_problem(api: Api) -> None:
    response = await api.client.post("/v1/agents/assistant/runs", content=json.dumps(run_body()))
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "key",
    ["sba_000000000000_wrong", "not-a-key", "sba_short_x", ""],
)
async def test_a_wrong_key_is_a_401_problem(api: Api, key: str) -> None:
    response = await api.client.post(
        "/v1/agents/assistant/runs",
        content=json.dumps(run_body()),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert_problem(response, 401, "unauthenticated")


async def test_a_right_prefix_with_a_wrong_secret_is_a_401_problem(api: Api) -> None:
    forged = "_".join(api.key.split("_", 2)[:2]) + "_" + "A" * 43
    assert_problem(await api.run(run_body(), key=forged), 401, "unauthenticated")


async def test_x_tenant_id_of_another_tenant_is_a_403_problem(api: Api) -> None:
    await api.key_for("acme")
    assert_problem(await api.run(run_body(), **{"X-Tenant-ID": "acme"}), 403, "not_a_member")
    ok = await api.run(run_body(), **{"X-Tenant-ID": "demo"})
    assert ok.status_code == 200


async def test_an_unknown_agent_is_a_404_problem(api: Api) -> None:
    response = await api.client.post(
        "/v1/agents/nobody/runs", content=json.dumps(run_body()), headers=api.auth()
    )
    assert_problem(response, 404, "not_found")


async def test_a_run_without_a_user_message_is_a_422_problem(api: Api) -> None:
    body = {"threadId": "t", "runId": "r", "messages": []}
    assert_problem(await api.run(body), 422, "invalid_input")


async def test_sending_a_run_again_attaches_to_it_and_starts_nothing_new(api: Api) -> None:
    first = await api.run(run_body())
    assert first.status_code == 200
    again = await api.run(run_body())
    assert again.status_code == 200
    # The same events with the same ids: the retry saw the run it had started, not a second.
    assert parse_sse(again.text) == parse_sse(first.text)
    resumed = await api.run(run_body(), **{"Last-Event-ID": "3"})
    assert parse_sse(resumed.text) == parse_sse(first.text)[3:]
    messages = (await api.client.get("/v1/threads/t1/messages", headers=api.auth())).json()
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant"]


async def test_a_run_id_sent_again_on_another_thread_is_a_409_problem(api: Api) -> None:
    assert (await api.run(run_body())).status_code == 200
    assert_problem(await api.run(run_body(thread_id="t2")), 409, "run_id_taken")


async def test_a_read_only_key_cannot_start_runs(api: Api) -> None:
    key = await api.key_for("demo", Role.READONLY)
    assert_problem(await api.run(run_body(), key=key), 403, "forbidden")


async def test_another_tenant_sees_neither_the_run_nor_its_thread(api: Api) -> None:
    assert (await api.run(run_body())).status_code == 200
    other = await api.key_for("acme")
    for path in ("/v1/runs/r1", "/v1/runs/r1/events", "/v1/threads/t1/messages"):
        response = await api.client.get(path, headers=api.auth(other))
        assert_problem(response, 404, "not_found")


async def test_an_other_tenants_thread_id_is_a_fresh_thread_not_theirs(api: Api) -> None:
    assert (await api.run(run_body(text="secret plans"))).status_code == 200
    other = await api.key_for("acme")
    assert (await api.run(run_body(run_id="r2", text="hello"), key=other)).status_code == 200
    mine = (await api.client.get("/v1/threads/t1/messages", headers=api.auth(other))).json()
    assert all("secret" not in m["content"] for m in mine["messages"])


async def test_resume_from_last_event_id_returns_exactly_the_rest(api: Api) -> None:
    full = parse_sse((await api.run(run_body())).text)
    resumed = await api.client.get(
        "/v1/runs/r1/events", headers={**api.auth(), "Last-Event-ID": "3"}
    )
    assert resumed.status_code == 200
    assert parse_sse(resumed.text) == full[3:]
    replay = await api.client.get("/v1/runs/r1/events", headers=api.auth())
    assert parse_sse(replay.text) == full
    after = await api.client.get("/v1/runs/r1/events?after=2", headers=api.auth())
    assert parse_sse(after.text) == full[2:]


async def test_a_malformed_last_event_id_is_a_422_problem(api: Api) -> None:
    assert (await api.run(run_body())).status_code == 200
    response = await api.client.get(
        "/v1/runs/r1/events", headers={**api.auth(), "Last-Event-ID": "abc"}
    )
    assert_problem(response, 422, "invalid_input")


async def test_an_expired_log_is_replayed_from_the_database(tmp_path) -> None:
    async for api in make_api(tmp_path, SBA_RUNS__MAX_FINISHED_RUNS="1"):
        first = parse_sse((await api.run(run_body("r1"))).text)
        assert (await api.run(run_body("r2", thread_id="t2"))).status_code == 200
        replay = parse_sse((await api.client.get("/v1/runs/r1/events", headers=api.auth())).text)
        assert types(replay) == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
        for _, data in replay:
            official.validate_python(data)
        answer = "".join(d["delta"] for _, d in first if d["type"] == "TEXT_MESSAGE_CONTENT")
        assert replay[1][1]["messages"][-1]["content"] == answer


class FailingModel:
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield TextChunk("partial ")
        raise ModelError("the provider is down", code="model_error")


class FailingModelProvider(Provider):
    scope = Scope.APP

    @provide
    def model(self) -> ChatModel:
        return FailingModel()


async def test_a_model_failure_ends_the_stream_with_run_error_and_a_code(tmp_path) -> None:
    async for api in make_api(tmp_path, FailingModelProvider()):
        frames = parse_sse((await api.run(run_body())).text)
        assert types(frames)[-1] == "RUN_ERROR"
        assert "RUN_FINISHED" not in types(frames)
        assert frames[-1][1]["code"] == "model_error"
        for _, data in frames:
            official.validate_python(data)
        run = (await api.client.get("/v1/runs/r1", headers=api.auth())).json()
        assert (run["status"], run["errorCode"]) == ("failed", "model_error")


async def test_the_tenant_rate_limit_answers_429_with_retry_after(tmp_path) -> None:
    async for api in make_api(
        tmp_path, SBA_RATE_LIMIT__DEFAULT_PER_MINUTE="5", SBA_RATE_LIMIT__BURST_RATIO="0.4"
    ):
        codes = [
            (await api.client.get("/v1/runs/none", headers=api.auth())).status_code
            for _ in range(3)
        ]
        assert codes == [404, 404, 429]
        limited = await api.client.get("/v1/runs/none", headers=api.auth())
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1


async def test_health_readiness_and_openapi_are_served(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}
    spec = (await api.client.get("/schema/openapi.json")).json()
    assert "/v1/agents/{agent}/runs" in spec["paths"]
    assert (await api.client.get("/schema")).status_code == 200


async def test_an_unknown_route_is_a_404_problem(api: Api) -> None:
    assert_problem(await api.client.get("/v1/nothing-here"), 404, "not_found")


async def test_two_tenants_may_use_the_same_run_id_and_each_sees_only_its_own(api: Api) -> None:
    mine = parse_sse((await api.run(run_body(text="alpha question"))).text)
    other = await api.key_for("acme")
    theirs_response = await api.run(run_body(text="beta question"), key=other)
    assert theirs_response.status_code == 200
    theirs = parse_sse(theirs_response.text)
    text = lambda frames: "".join(  # noqa: E731
        d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT"
    )
    assert "beta question" in text(theirs) and "alpha" not in text(theirs)
    replay_mine = parse_sse((await api.client.get("/v1/runs/r1/events", headers=api.auth())).text)
    replay_theirs = parse_sse(
        (await api.client.get("/v1/runs/r1/events", headers=api.auth(other))).text
    )
    assert replay_mine == mine
    assert replay_theirs == theirs


class TimeoutModel:
    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        raise ModelError("the provider timed out", code="model_timeout")
        yield TextChunk("")  # pragma: no cover - makes this an async generator


class TimeoutModelProvider(Provider):
    scope = Scope.APP

    @provide
    def model(self) -> ChatModel:
        return TimeoutModel()


async def test_a_specific_error_code_keeps_its_family_status(tmp_path) -> None:
    from entrypoints.http.problems import status_for

    assert status_for(ModelError("x", code="model_timeout")) == 502
    assert status_for(Conflict("x", code="run_id_taken")) == 409
    async for api in make_api(tmp_path, TimeoutModelProvider()):
        frames = parse_sse((await api.run(run_body())).text)
        assert frames[-1][1] == {
            "type": "RUN_ERROR",
            "message": "the provider timed out",
            "code": "model_timeout",
        }


async def test_runs_and_knowledge_changes_are_in_the_tenants_audit_trail(tmp_path) -> None:
    from application.audit.use_cases import AuditTrails
    from application.ports import UnitOfWork

    async for api in make_api(tmp_path, own_setup=True, SBA_LLM__LOADTEST="true"):
        response = await api.run(run_body(run_id="audited", thread_id="t-audit"))
        assert response.status_code == 200
        doc = {"id": "pricing", "title": "Pricing", "content": "Plans start at 10 USD."}
        made = await api.client.post("/v1/kb/documents", json=doc, headers=api.auth())
        assert made.status_code == 201
        gone = await api.client.delete("/v1/kb/documents/pricing", headers=api.auth())
        assert gone.status_code == 204
        trails = AuditTrails(await api.container.get(UnitOfWork))
        [tenant] = await trails.tenants(actor="test", slug="demo")
        entries = [e async for e in trails.entries(tenant)]
        actions = [(e.action, e.subject) for e in entries]
        assert ("run.started", "audited") in actions and ("run.finished", "audited") in actions
        finished = next(e for e in entries if e.action == "run.finished")
        assert finished.details["status"] == "succeeded"
        assert actions[-2:] == [
            ("kb.document.added", "pricing"),
            ("kb.document.deleted", "pricing"),
        ]
        assert entries[-1].actor == entries[-2].actor != ""
        assert "Plans start" not in str([dict(e.details) for e in entries])  # no contents
        assert (await trails.verify(tenant)).broken is None
