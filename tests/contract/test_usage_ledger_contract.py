"""UsageLedger contract over every run journal: whatever order runs start and end in, and
however often an end is recorded again (a retried write), the ledger charges each run once,
with the usage it first ended with, and never goes negative; runs of another tenant or outside
the range are not counted. Audit entries of the runs verify."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory.persistence import MemoryUnitOfWork
from adapters.memory.usage import MemoryUsageLedger
from adapters.sqla.uow import SqlaUnitOfWork
from adapters.sqla.usage import SqlaUsageLedger
from domain.audit.model import verify
from domain.conversation.model import Run, Usage
from domain.ids import RunId, ThreadId
from domain.quota.budget import DAY_MS
from tests.contract.test_run_journal_contract import KINDS, A, B, make_subject, msg

steps = st.lists(
    st.tuples(
        st.sampled_from([A, B]),
        st.integers(0, 4),  # run number
        st.integers(0, 3),  # day
        st.integers(0, 500),  # input tokens of its end
        st.integers(0, 500),  # output tokens
    ),
    min_size=1,
    max_size=14,
)


def ledger_for(subject):
    uow = subject.uow
    if isinstance(uow, MemoryUnitOfWork):
        return MemoryUsageLedger(uow)
    assert isinstance(uow, SqlaUnitOfWork)
    return SqlaUsageLedger(uow.database)


@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=steps)
def test_each_run_is_charged_once_with_its_first_ending(
    kind, request, tmp_path_factory, sequence
) -> None:
    async def scenario() -> None:
        tmp = tmp_path_factory.mktemp(kind)
        async for subject in make_subject(kind, request, tmp):
            ledger = ledger_for(subject)
            started: dict[tuple, Run] = {}
            charged: dict[tuple, int] = {}
            for tenant, n, day, inp, out in sequence:
                key = (tenant, n)
                if key not in started:
                    run = Run(
                        id=RunId(f"r{n}"),
                        tenant_id=tenant,
                        thread_id=ThreadId(f"t{n}"),
                        agent="assistant",
                        created_at_ms=day * DAY_MS + 5,
                    )
                    await subject.journal.record_start(run, [msg(f"u{n}")])
                    run.start()
                    started[key] = run
                    continue
                run = started[key]
                ended = Run(
                    id=run.id,
                    tenant_id=tenant,
                    thread_id=run.thread_id,
                    agent="assistant",
                    created_at_ms=run.created_at_ms,
                )
                ended.start()
                ended.succeed(
                    usage=Usage(input_tokens=inp, output_tokens=out),
                    at_ms=run.created_at_ms + 1,
                )
                await subject.journal.record_end(ended, [])
                charged.setdefault(key, inp + out)  # a later end changes nothing
            for tenant in (A, B):
                expected = sum(v for (t, _), v in charged.items() if t == tenant)
                total = await ledger.tokens_since(tenant, 0)
                assert total == expected >= 0
                later = sum(
                    v
                    for (t, n), v in charged.items()
                    if t == tenant and started[(t, n)].created_at_ms >= 2 * DAY_MS
                )
                assert await ledger.tokens_since(tenant, 2 * DAY_MS) == later
                days = await ledger.daily(tenant, 0, 4 * DAY_MS)
                assert sum(d.input_tokens + d.output_tokens for d in days) == expected
                assert sum(d.runs for d in days) == sum(1 for (t, _) in started if t == tenant)
                async with subject.uow.transaction(tenant) as tx:
                    entries = await tx.audit.entries(tenant)
                    head = await tx.audit.head(tenant)
                assert verify(tenant, entries, head) is None
                ends = [e for e in entries if e.action == "run.finished"]
                assert len(ends) == sum(1 for (t, _) in charged if t == tenant)

    asyncio.run(scenario())
