"""/metrics names tenants in its series: under the default settings nobody reads it through the
API port; a token, or a listener of its own on a private address, lets Prometheus in."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_http_api import assert_problem
from tests.integration.test_observability import observed_api

SCRAPE = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "scrape.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_are_not_served_on_the_api_port_under_the_defaults(tmp_path) -> None:
    async for api in observed_api(tmp_path, SBA_TELEMETRY__METRICS_TOKEN=""):
        answer = await api.client.get("/metrics")
        assert_problem(answer, 404, "not_found")
        assert "sba_" not in answer.text
        with_a_key = await api.client.get("/metrics", headers=api.auth())
        assert_problem(with_a_key, 404, "not_found")
        paths = (await api.client.get("/schema/openapi.json")).json()["paths"]
        assert "/metrics" not in paths


async def test_with_a_token_only_its_holder_scrapes(tmp_path) -> None:
    async for api in observed_api(tmp_path, SBA_TELEMETRY__METRICS_TOKEN="scrape-me"):
        assert_problem(await api.client.get("/metrics"), 401, "unauthenticated")
        assert_problem(await api.client.get("/metrics", headers=api.auth()), 401, "unauthenticated")
        ok = await api.client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200
        assert any(f.name.startswith("sba_") for f in text_string_to_metric_families(ok.text))


async def test_a_metrics_port_serves_them_apart_from_the_api(tmp_path) -> None:
    port = free_port()
    async for api in observed_api(
        tmp_path, SBA_TELEMETRY__METRICS_TOKEN="", SBA_TELEMETRY__METRICS_PORT=str(port)
    ):
        assert_problem(await api.client.get("/metrics"), 404, "not_found")
        async with httpx.AsyncClient() as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{port}/metrics")
            assert scraped.status_code == 200
            assert "sba_http_requests" in scraped.text
            other = await scraper.get(f"http://127.0.0.1:{port}/v1/tools")
            assert other.status_code == 404


def test_the_prometheus_scrape_example_sends_the_token_to_the_api_port() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["sba-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["authorization"]["type"] == "Bearer"
    assert api["authorization"]["credentials_file"]
    # The other ways in are listeners of their own, reached without the API's token.
    assert "authorization" not in jobs["sba-api-metrics-port"]
    assert "authorization" not in jobs["sba-worker"]
