"""Metering to Stripe: the adapter speaks the documented meter-events wire format (form fields,
bearer key, idempotency key, answer shape); failures map to retryable or not without showing
the key; through the API each finished run of a metered tenant becomes one meter event with
its tokens, a redelivered job is the same event, and a Stripe outage never fails a run."""

from __future__ import annotations

import httpx
import pytest

from adapters.billing.stripe import StripeMeterReporter
from application.billing.ports import MeterEvent
from application.billing.use_cases import meter_job
from application.errors import InvalidInput, ServiceUnavailable
from application.jobs.ports import DeadLetterStore
from tests.billing.fake_stripe import SECRET, ThreadedStripe
from tests.integration.test_http_api import make_api, run_body
from tests.integration.test_workers import until

EVENT = MeterEvent(
    identifier="sba-run-ten_1-r1", customer="cus_NciAYcXfLnqBoz", value=25, timestamp_s=1680210639
)


async def test_a_meter_event_is_sent_as_stripe_documents_it() -> None:
    with ThreadedStripe() as stripe:
        async with httpx.AsyncClient(timeout=5) as client:
            reporter = StripeMeterReporter(
                client,
                api_key=SECRET,
                event_name="ai_search_api",
                base_url=stripe.url,
                api_version="2025-04-30.basil",
            )
            await reporter.report(EVENT)
            await reporter.report(EVENT)  # a retry: Stripe answers it from its idempotency key
        [(path, headers, form)] = stripe.requests[:1]
        assert path == "/v1/billing/meter_events"
        assert headers["authorization"] == f"Bearer {SECRET}"
        assert headers["content-type"] == "application/x-www-form-urlencoded"
        assert headers["idempotency-key"] == "sba-run-ten_1-r1"
        assert headers["stripe-version"] == "2025-04-30.basil"
        assert form == {
            "event_name": "ai_search_api",
            "payload[stripe_customer_id]": "cus_NciAYcXfLnqBoz",
            "payload[value]": "25",
            "identifier": "sba-run-ten_1-r1",
            "timestamp": "1680210639",
        }
        assert len(stripe.requests) == 2 and len(stripe.events) == 1


@pytest.mark.parametrize(
    ("status", "customer", "error"),
    [
        (500, "cus_x", ServiceUnavailable),
        (429, "cus_x", ServiceUnavailable),
        (None, "acct_x", InvalidInput),
    ],
)
async def test_failures_are_retryable_or_not_and_never_show_the_key(
    status, customer, error
) -> None:
    with ThreadedStripe() as stripe:
        if status:
            stripe.statuses = [status]
        async with httpx.AsyncClient(timeout=5) as client:
            reporter = StripeMeterReporter(
                client, api_key=SECRET, event_name="e", base_url=stripe.url
            )
            with pytest.raises(error) as info:
                await reporter.report(
                    MeterEvent(identifier="i", customer=customer, value=1, timestamp_s=1)
                )
        assert SECRET not in info.value.message
        assert stripe.events == []
    async with httpx.AsyncClient(timeout=2) as client:
        down = StripeMeterReporter(
            client, api_key=SECRET, event_name="e", base_url="http://127.0.0.1:1"
        )
        with pytest.raises(ServiceUnavailable, match="could not be reached"):
            await down.report(EVENT)


async def test_each_finished_run_of_a_metered_tenant_is_one_meter_event(tmp_path) -> None:
    with ThreadedStripe() as stripe:
        env = {
            "SBA_BILLING__PROVIDER": "stripe",
            "SBA_BILLING__API_KEY": SECRET,
            "SBA_BILLING__BASE_URL": stripe.url,
            "SBA_BILLING__EVENT_NAME": "sba_tokens",
            "SBA_BILLING__CUSTOMERS": '{"demo": "cus_Demo123"}',
            "SBA_WORKER__RETRY_BASE_MS": "1",
            "SBA_WORKER__RETRY_CAP_MS": "2",
            "SBA_WORKER__MAX_ATTEMPTS": "2",
        }
        # own_setup: the test reads the dead letters through a container on its own loop.
        async for api in make_api(tmp_path, own_setup=True, **env):
            for run_id in ("r1", "r2"):
                assert (await api.run(run_body(run_id=run_id, thread_id="t1"))).status_code == 200
            runs = [
                (await api.client.get(f"/v1/runs/{r}", headers=api.auth())).json()
                for r in ("r1", "r2")
            ]
            assert [e["payload[value]"] for e in stripe.events] == [
                str(r["inputTokens"] + r["outputTokens"]) for r in runs
            ]
            assert all(e["payload[stripe_customer_id]"] == "cus_Demo123" for e in stripe.events)
            identifiers = [e["identifier"] for e in stripe.events]
            assert len(set(identifiers)) == 2 and all(i.startswith("sba-run-") for i in identifiers)

            # Stripe down: the run still succeeds; the report is retried, then dead-lettered.
            stripe.statuses = [503, 503]
            third = await api.run(run_body(run_id="r3", thread_id="t1"))
            assert third.status_code == 200 and "RUN_FINISHED" in third.text
            assert len(stripe.events) == 2
            dead = await api.container.get(DeadLetterStore)
            # The retry runs on a timer of the app's loop: wait for it to give up.
            letters = await until(
                lambda store=dead: store.list(limit=10), timeout_s=10, what="dead letter"
            )
            assert [d.job.kind for d in letters] == ["usage.report"]
            assert letters[0].job == meter_job(letters[0].job.tenant_id, "r3").next_attempt()
