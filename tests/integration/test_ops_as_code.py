"""The Grafana dashboard and the Prometheus alert rules in ``ops/`` use only metrics and
labels that SBA exposes, and the alerts cover the planning documents' KPIs."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_http_api import Api, run_body
from tests.integration.test_observability import PRICES, RENDER, observed_api, scrape

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "sba-overview.json"

_METRIC = re.compile(r"\b(sba_[a-z0-9_]+)\s*(\{(?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
# Labels Prometheus itself adds, or that histograms carry.
_BUILTIN = {"le", "instance", "job"}


def rules() -> list[dict]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def all_exprs() -> list[str]:
    return [r["expr"] for r in rules()] + dashboard_exprs()


@pytest.fixture
async def exposed(tmp_path) -> AsyncIterator[dict[str, tuple[str, set[str]]]]:
    """Family name → (type, label names seen), from a server that has done some work."""
    chain = '[{"name": "offline", "kind": "offline"}]'
    async for api in observed_api(tmp_path, SBA_LLM__CHAIN=chain, SBA_BILLING__PRICES=PRICES):
        await exercise(api)
        text = (await scrape(api)).text
        out: dict[str, tuple[str, set[str]]] = {}
        for fam in text_string_to_metric_families(text):
            labels = {k for s in fam.samples for k in s.labels}
            out[fam.name] = (fam.type, labels)
        yield out


async def exercise(api: Api) -> None:
    for i, text in enumerate(("hello", RENDER, '/tool kb_search {"query": "refunds"}')):
        assert (await api.run(run_body(run_id=f"x{i}", thread_id=f"x{i}", text=text))).is_success


def family_of(name: str, exposed: dict[str, tuple[str, set[str]]]) -> str | None:
    if name in exposed:
        return name
    for suffix, kinds in (
        ("_total", {"counter"}),
        ("_bucket", {"histogram"}),
        ("_count", {"histogram"}),
        ("_sum", {"histogram"}),
    ):
        base = name.removesuffix(suffix)
        if base != name and base in exposed and exposed[base][0] in kinds:
            return base
    return None


def test_the_files_are_well_formed_and_every_alert_is_actionable() -> None:
    seen = set()
    for rule in rules():
        assert rule["alert"].startswith("Sba") and rule["alert"] not in seen
        seen.add(rule["alert"])
        assert rule["expr"].strip() and re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["gridPos"] for p in board["panels"])


def test_the_alerts_cover_the_kpis_at_their_targets() -> None:
    by_kpi = {r["labels"]["kpi"]: r["expr"] for r in rules()}
    assert "sba_tool_duration_seconds_bucket" in by_kpi["tool_latency_p95"]
    assert by_kpi["tool_latency_p95"].rstrip().endswith("> 0.5")
    assert "sba_sse_first_event_seconds_bucket" in by_kpi["sse_first_event"]
    assert by_kpi["sse_first_event"].rstrip().endswith("> 0.1")
    assert 'outcome="failed"' in by_kpi["agent_error_rate"]
    assert by_kpi["agent_error_rate"].rstrip().endswith("> 0.01")
    assert "< 0.6" in by_kpi["cache_hit_ratio"]
    assert "sba_dead_letters" in by_kpi["dead_letters"]


async def test_every_metric_and_label_the_ops_files_use_exists(exposed) -> None:
    problems = []
    for expr in all_exprs():
        used: set[str] = set()
        labels_of_used: set[str] = set()
        for m in _METRIC.finditer(expr):
            family = family_of(m.group(1), exposed)
            if family is None:
                problems.append(f"{m.group(1)} is not exposed (in {expr!r})")
                continue
            used.add(family)
            labels = exposed[family][1] | _BUILTIN
            labels_of_used |= labels
            for label in _MATCHER.findall(m.group(2) or ""):
                if label not in labels:
                    problems.append(f"{family} has no label {label!r} (in {expr!r})")
        assert used, f"no SBA metric in {expr!r}"
        for group in _GROUPING.findall(expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                if label not in labels_of_used:
                    problems.append(f"no metric of {expr!r} has the label {label!r}")
    assert not problems, "\n".join(problems)


def test_the_checker_itself_catches_a_missing_metric_and_label() -> None:
    fake = {"sba_runs": ("counter", {"outcome", "code"})}
    assert family_of("sba_runs_total", fake) == "sba_runs"
    assert family_of("sba_runs_bucket", fake) is None
    assert family_of("sba_nothing_total", fake) is None
    [m] = _METRIC.finditer('rate(sba_runs_total{outcome="failed", route!="/a/{b}/c"}[5m])')
    assert _MATCHER.findall(m.group(2)) == ["outcome", "route"]
