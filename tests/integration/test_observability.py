"""Traces, metrics and logs through the real application (ADR 0031)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from adapters.observability.logs import JsonFormatter
from application.knowledge.use_cases import IngestDocument
from application.ports import SchemaMigrator
from application.tenancy.use_cases import EnsureDemoTenant
from entrypoints.http.app import create_app
from entrypoints.ioc.container import make_container
from entrypoints.ioc.telemetry import build_telemetry
from entrypoints.seed import seed_demo_knowledge
from entrypoints.settings import SettingsError, load_settings
from tests.http_fake import Answer, Request, serve
from tests.in_thread import InThread
from tests.integration.test_http_api import Api, parse_sse, run_body
from tests.redis_support import REDIS_URL, drop_prefix, new_prefix, require_redis

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
RENDER = '/tool render_document {"template": "inline:Hello {{ name }}", "data": {"name": "Ada"}}'
PRICES = '{"offline": {"input_per_million": 1.5, "output_per_million": 6}}'

# Every metric issue 8 names, by the family name the Prometheus parser reports.
REQUIRED = {
    "sba_http_requests": "counter",
    "sba_http_request_duration_seconds": "histogram",
    "sba_sse_first_event_seconds": "histogram",
    "sba_runs": "counter",
    "sba_tool_duration_seconds": "histogram",
    "sba_model_tokens": "counter",
    "sba_model_cost": "counter",
    "sba_model_call_duration_seconds": "histogram",
    "sba_model_fallbacks": "counter",
    "sba_model_attempts": "counter",
    "sba_cache_requests": "counter",
    "sba_rate_limit_decisions": "counter",
    "sba_active_streams": "gauge",
    "sba_active_runs": "gauge",
    "sba_queue_depth": "gauge",
    "sba_tasks": "counter",
    "sba_dead_letters": "gauge",
}


METRICS_TOKEN = "metrics-token-for-tests"


async def scrape(api: Api) -> httpx.Response:
    return await api.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})


async def observed_api(
    tmp_path, exporter: InMemorySpanExporter | None = None, *, own_setup: bool = False, **env: str
) -> AsyncIterator[Api]:
    """The app with its telemetry; ``own_setup`` as in ``make_api`` (for Redis). /metrics
    answers ``scrape`` (its token) unless ``env`` sets another."""
    settings = load_settings(
        {"SBA_DATA_DIR": str(tmp_path), "SBA_TELEMETRY__METRICS_TOKEN": METRICS_TOKEN, **env}
    )
    app = create_app(settings, telemetry=build_telemetry(settings, span_exporter=exporter))
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
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(tmp_path, exporter) -> AsyncIterator[Api]:
    async for api in observed_api(tmp_path, exporter, SBA_BILLING__PRICES=PRICES):
        yield api


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    total = 0.0
    for s in fams[name].samples:
        if (sample is None or s.name == sample) and all(
            s.labels.get(k) == v for k, v in labels.items()
        ):
            total += s.value
    return total


def chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The names of the span's ancestors, nearest first."""
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        up = by_id[parent.span_id]
        names.append(up.name)
        parent = up.parent
    return names


async def test_one_trace_runs_from_the_request_through_the_run_tool_model_and_job(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    response = await traced.run(
        run_body(run_id="traced", text=RENDER), traceparent=f"00-{TRACE_ID}-{PARENT}-01"
    )
    assert response.status_code == 200
    assert parse_sse(response.text)[-1][1]["type"] == "RUN_FINISHED"
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)]
    by_id = {s.context.span_id: s for s in spans}
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)

    [server] = by_name["POST /v1/agents/{agent}/runs"]
    # The caller's span is the request's parent: the incoming traceparent was honoured.
    assert server.parent is not None and server.parent.span_id == int(PARENT, 16)
    assert server.attributes["http.response.status_code"] == 200
    [run] = by_name["run"]
    assert run.parent.span_id == server.context.span_id
    assert run.attributes["sba.run_id"] == "traced"
    assert run.attributes["sba.run.outcome"] == "succeeded"
    [tool] = by_name["tool render_document"]
    assert chain(tool, by_id)[:2] == ["run", server.name]
    assert tool.attributes["sba.tool.outcome"] == "ok"
    models = by_name["chat offline"]
    assert len(models) == 2  # the step that called the tool, and the answer
    for m in models:
        assert m.parent.span_id == run.context.span_id
        assert m.attributes["gen_ai.system"] == "offline"
        assert m.attributes["sba.llm.fallback"] is False
    assert sum(m.attributes["gen_ai.usage.output_tokens"] for m in models) > 0
    # The render job ran from its queue message, inside the trace of the tool that queued it.
    [job] = by_name["job render.run"]
    assert "tool render_document" in chain(job, by_id)
    assert job.attributes["sba.job.kind"] == "render.run"
    # Statements are spans of the same trace, under the work that issued them.
    statements = [s for s in spans if s.attributes.get("db.system") == "sqlite"]
    assert any(chain(s, by_id)[:1] == [job.name] for s in statements)
    assert all(s.context.trace_id == int(TRACE_ID, 16) for s in statements)


async def test_a_request_without_a_trace_starts_its_own_and_unknown_paths_are_spans_too(
    traced: Api, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    missing = await traced.client.get("/v1/nowhere/abc123", headers=traced.auth())
    assert missing.status_code == 404
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert span.parent is None
    # No raw path becomes a span name or a route: ids would be unbounded.
    assert span.name == "GET unmatched"
    assert span.attributes["http.route"] == "unmatched"


async def test_metrics_parse_and_carry_every_named_metric_with_true_values(
    traced: Api,
) -> None:
    for i in range(3):
        assert (await traced.run(run_body(run_id=f"m{i}", thread_id=f"t{i}"))).status_code == 200
    assert (await traced.run(run_body(run_id="m-tool", text=RENDER))).status_code == 200
    assert (await traced.client.get("/v1/runs/m0", headers=traced.auth())).status_code == 200
    assert (await traced.client.get("/v1/runs/m0")).status_code == 401
    scraped = await scrape(traced)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = families(scraped.text)
    for name, kind in REQUIRED.items():
        assert name in fams, f"{name} is missing from /metrics"
        assert fams[name].type == kind, name

    route = "/v1/agents/{agent}/runs"
    assert value(fams, "sba_http_requests", route=route, method="POST", status="200") == 4
    assert value(fams, "sba_http_requests", route="/v1/runs/{run_id}", status="401") == 1
    assert value(fams, "sba_sse_first_event_seconds", "sba_sse_first_event_seconds_count") == 4
    assert value(fams, "sba_runs", outcome="succeeded") == 4
    assert value(fams, "sba_runs", outcome="failed") == 0
    assert value(fams, "sba_active_streams") == 0 and value(fams, "sba_active_runs") == 0
    assert (
        value(
            fams,
            "sba_tool_duration_seconds",
            "sba_tool_duration_seconds_count",
            tool="render_document",
        )
        == 1
    )
    assert value(fams, "sba_tasks", kind="render.run", outcome="succeeded") == 1
    assert value(fams, "sba_rate_limit_decisions", limiter="runs", decision="admitted") == 4

    # Tokens and cost are those the runs themselves recorded.
    runs = [
        (await traced.client.get(f"/v1/runs/{r}", headers=traced.auth())).json()
        for r in ("m0", "m1", "m2", "m-tool")
    ]
    inp = sum(r["inputTokens"] for r in runs)
    out = sum(r["outputTokens"] for r in runs)
    assert value(fams, "sba_model_tokens", direction="input", model="offline") == inp
    assert value(fams, "sba_model_tokens", direction="output", model="offline") == out
    cost = value(fams, "sba_model_cost", model="offline", currency="USD")
    assert cost == pytest.approx((inp * 1.5 + out * 6) / 1_000_000)

    # Bounded cardinality: no run, thread or message id in any label.
    for fam in fams.values():
        for s in fam.samples:
            for v in s.labels.values():
                assert not v.startswith(("m0", "m1", "m2", "m-tool", "t0", "/v1/runs/m")), s


async def test_cache_hits_and_misses_are_counted_per_cache(traced: Api) -> None:
    search = '/tool kb_search {"query": "refund policy"}'
    for i in range(3):
        body = run_body(run_id=f"c{i}", thread_id=f"c{i}", text=search)
        assert (await traced.run(body)).status_code == 200
    fams = families((await scrape(traced)).text)
    assert value(fams, "sba_cache_requests", cache="kb_search", result="miss") == 1
    assert value(fams, "sba_cache_requests", cache="kb_search", result="hit") == 2


async def test_the_metrics_token_guards_the_exposition(tmp_path) -> None:
    async for api in observed_api(tmp_path, SBA_TELEMETRY__METRICS_TOKEN="s3cret"):
        refused = await api.client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        wrong = await api.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await api.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "sba_http_requests_total" in ok.text


async def test_metrics_can_be_turned_off(tmp_path) -> None:
    async for api in observed_api(tmp_path, SBA_TELEMETRY__METRICS="false"):
        assert (await api.client.get("/metrics")).status_code == 404
        assert (await api.run(run_body())).status_code == 200


async def test_request_ids_are_echoed_or_made(tmp_path) -> None:
    async for api in observed_api(tmp_path):
        given = await api.client.get("/healthz", headers={"X-Request-ID": "req-42.a:b"})
        assert given.headers["x-request-id"] == "req-42.a:b"
        # Spaces, bytes beyond ASCII and overlong ids are replaced by an id of our own.
        for bad in (b"bad id", "caf\u00e9".encode("latin-1"), b"x" * 129):
            made = await api.client.get("/healthz", headers={"X-Request-ID": bad})
            assert made.headers["x-request-id"].encode() != bad
            assert len(made.headers["x-request-id"]) == 16
        other = await api.client.get("/healthz")
        assert other.headers["x-request-id"] not in (made.headers["x-request-id"], "")
        # Streams carry it too, and problem answers.
        stream = await api.run(run_body(run_id="rid"), **{"X-Request-ID": "stream-1"})
        assert stream.headers["x-request-id"] == "stream-1"
        problem = await api.client.get("/v1/runs/x", headers={"X-Request-ID": "p-1"})
        assert problem.status_code == 401 and problem.headers["x-request-id"] == "p-1"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Records formatted as they are emitted, in the emitting context, as in production."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


async def test_message_contents_are_logged_only_for_tenants_that_asked(
    tmp_path, json_logs: io.StringIO
) -> None:
    secret_words = "Quarterly numbers for Project Zebrafish"
    async for api in observed_api(tmp_path / "off"):
        response = await api.run(run_body(run_id="quiet", text=secret_words))
        assert response.status_code == 200
    assert "Zebrafish" not in json_logs.getvalue()

    exporter = InMemorySpanExporter()
    async for api in observed_api(tmp_path / "on", exporter, SBA_LOG__CONTENT_TENANTS='["demo"]'):
        response = await api.run(
            run_body(run_id="loud", text=secret_words), **{"X-Request-ID": "debug-7"}
        )
        assert response.status_code == 200
    [entry] = [e for e in lines(json_logs) if e["logger"] == "sba.llm.content"]
    assert entry["prompt"][-1] == {"role": "user", "content": secret_words}
    assert "Zebrafish" in entry["answer"]
    assert entry["request_id"] == "debug-7"
    assert entry["tenant"].startswith("ten_")
    [run] = [s for s in exporter.get_finished_spans() if s.name == "run"]
    assert entry["trace_id"] == format(run.context.trace_id, "032x")


def test_telemetry_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="SAMPLE_RATIO"):
        load_settings({"SBA_TELEMETRY__SAMPLE_RATIO": "1.5"})
    with pytest.raises(SettingsError, match="OTLP_ENDPOINT"):
        load_settings({"SBA_TELEMETRY__TRACES": "otlp", "SBA_TELEMETRY__OTLP_ENDPOINT": "nope"})
    with pytest.raises(SettingsError, match="SBA_TELEMETRY__TRACES"):
        load_settings({"SBA_TELEMETRY__TRACES": "zipkin"})


async def test_redis_calls_are_spans_of_the_request_that_made_them(tmp_path) -> None:
    require_redis()
    prefix = new_prefix()
    exporter = InMemorySpanExporter()
    try:
        async for api in observed_api(
            tmp_path,
            exporter,
            own_setup=True,
            SBA_REDIS_URL=REDIS_URL,
            SBA_REDIS__KEY_PREFIX=prefix,
        ):
            exporter.clear()
            response = await api.run(
                run_body(run_id="redis"), traceparent=f"00-{TRACE_ID}-{PARENT}-01"
            )
            assert response.status_code == 200
    finally:
        await drop_prefix(REDIS_URL, prefix)
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    redis_spans = [s for s in spans if s.attributes.get("db.system") == "redis"]
    assert {s.name for s in redis_spans} >= {"redis rate limit"}
    assert all(s.context.trace_id == int(TRACE_ID, 16) for s in redis_spans)
    # The run's event appends happen inside the run's span.
    assert any("run" in chain(s, by_id) for s in redis_spans)


class FakeCollector:
    """An OpenTelemetry collector's OTLP/HTTP trace endpoint: decodes each export (protobuf)
    and answers as the OTLP specification says (200 with an ExportTraceServiceResponse)."""

    def __init__(self) -> None:
        self.exports: list[tuple[dict[str, str], Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            lambda r, w: serve(r, w, self.handle), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def handle(self, request: Request) -> Answer:
        if request.method != "POST" or request.path != "/v1/traces":
            return Answer(404)
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body)
        self.exports.append((request.headers, export))
        return Answer(
            200,
            ExportTraceServiceResponse().SerializeToString(),
            {"content-type": "application/x-protobuf"},
        )


async def test_spans_are_exported_over_otlp_to_the_configured_collector(tmp_path) -> None:
    with InThread(FakeCollector()) as collector:
        env = {
            "SBA_TELEMETRY__TRACES": "otlp",
            "SBA_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}/v1/traces",
            "SBA_TELEMETRY__OTLP_HEADERS": '{"x-collector-team": "sba-ops"}',
            "SBA_TELEMETRY__SERVICE_NAME": "sba-test",
        }
        async for api in observed_api(tmp_path, **env):
            response = await api.run(
                run_body(run_id="otlp"), traceparent=f"00-{TRACE_ID}-{PARENT}-01"
            )
            assert response.status_code == 200
        # Leaving the app flushed the batch processor.
    assert collector.exports
    names = set()
    for headers, export in collector.exports:
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-collector-team"] == "sba-ops"
        for rs in export.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] == "sba-test"
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if span.trace_id.hex() == TRACE_ID:
                        names.add(span.name)
    assert {"POST /v1/agents/{agent}/runs", "run", "chat offline"} <= names
