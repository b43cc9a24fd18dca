"""The wire form of a job: a msgspec envelope, shared by the broker and the dead-letter store."""

from __future__ import annotations

import msgspec

from domain.ids import TenantId
from domain.jobs.model import Job


class JobMessage(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    tenant_id: str
    key: str
    args: dict[str, str] = {}
    attempt: int = 1
    trace: dict[str, str] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobMessage)


def encode_job(job: Job) -> str:
    return _encoder.encode(
        JobMessage(
            kind=job.kind,
            tenant_id=job.tenant_id,
            key=job.key,
            args=dict(job.args),
            attempt=job.attempt,
            trace=dict(job.trace),
        )
    ).decode()


def decode_job(raw: str | bytes) -> Job:
    m = _decoder.decode(raw)
    return Job(
        kind=m.kind,
        tenant_id=TenantId(m.tenant_id),
        key=m.key,
        args=m.args,
        attempt=m.attempt,
        trace=m.trace,
    )
