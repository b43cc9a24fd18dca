"""The public forge's CI workflow runs what CI runs everywhere, ``.ci/run``, with CI=true,
against Postgres and Redis service containers on the ports and authentication the tests
expect."""

from __future__ import annotations

import yaml

from tests.deploy.support import ROOT
from tests.pg import ADMIN_DSN
from tests.redis_support import REDIS_URL

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_the_workflow_runs_ci_run_against_postgres_and_redis_services() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    [job] = flow["jobs"].values()
    runs = [s for s in job["steps"] if "run" in s]
    assert runs[-1]["run"].strip() == "bash .ci/run"
    assert runs[-1]["env"]["CI"] == "true"
    services = job["services"]
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "127.0.0.1:5432/" in ADMIN_DSN and services["postgres"]["ports"] == ["5432:5432"]
    assert "127.0.0.1:6379/" in REDIS_URL and services["redis"]["ports"] == ["6379:6379"]
    # Redis 7 or newer: consumer-group lag, which the worker autoscaling reads.
    assert int(services["redis"]["image"].split(":")[1].split(".")[0]) >= 7
    assert job["timeout-minutes"] <= 90
