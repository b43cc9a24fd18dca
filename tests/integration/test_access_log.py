"""The access log: one record per request, with its request id, status, tenant and duration,
the path without its query, written by a thread of its own; off with SBA_HTTP__ACCESS_LOG."""

from __future__ import annotations

import json
import logging

from adapters.observability.logs import JsonFormatter
from tests.integration.test_observability import observed_api


async def test_every_request_is_logged_once_with_its_id_status_and_tenant(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sba.access")
    async for api in observed_api(tmp_path):
        headers = {**api.auth(), "X-Request-ID": "look-1"}
        assert (await api.client.get("/v1/kb/search?q=private+words", headers=headers)).is_success
        refused = await api.client.get("/v1/tools", headers={"X-Request-ID": "look-2"})
        assert refused.status_code == 401
        await api.client.get(
            "/v1/runs/a%0Aforged", headers={**api.auth(), "X-Request-ID": "look-3"}
        )
    # The app has shut down: the log's thread has written everything queued.
    records = {r.request_id: r for r in caplog.records if r.name == "sba.access"}
    assert set(records) >= {"look-1", "look-2", "look-3"}
    ok = json.loads(JsonFormatter().format(records["look-1"]))
    assert (ok["method"], ok["path"], ok["status"]) == ("GET", "/v1/kb/search", 200)
    assert ok["tenant"] and ok["duration_ms"] >= 0
    assert "private" not in json.dumps(ok)
    assert records["look-2"].status == 401
    forged = records["look-3"]
    assert "\n" not in forged.getMessage() and "\\n" in forged.path


async def test_the_access_log_can_be_turned_off(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sba.access")
    async for api in observed_api(tmp_path, SBA_HTTP__ACCESS_LOG="false"):
        assert (await api.client.get("/healthz")).status_code == 200
    assert not [r for r in caplog.records if r.name == "sba.access"]
