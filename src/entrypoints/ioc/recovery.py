"""The sweep that ends runs whose instance is gone (ADR 0038), started with the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dishka import AsyncContainer

from application.conversation.recovery import RecoverLostRuns
from application.errors import ApplicationError
from entrypoints.settings import Settings

log = logging.getLogger("sba.runs")


async def start_recovery(container: AsyncContainer, settings: Settings) -> asyncio.Task[None]:
    """Without Redis the deployment is one instance whose leases lived in its process: the
    runs a previous process left unfinished are ended first. Then, every ``sweep_s``, runs
    whose leases lapsed (on any instance of the deployment) are ended."""
    recovery = await container.get(RecoverLostRuns)
    if settings.redis_url is None:
        try:
            ended = await recovery.at_start()
        except ApplicationError as exc:
            log.warning("runs of a previous process not ended: %s", exc.message)
        else:
            if ended:
                log.warning("ended %d runs a previous process left unfinished", ended)
    return asyncio.get_running_loop().create_task(
        _sweep_forever(recovery, settings.runs.sweep_s), name="sba-run-recovery"
    )


async def _sweep_forever(recovery: RecoverLostRuns, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            ended = await recovery.sweep()
        except ApplicationError as exc:
            log.warning("sweep for lost runs failed: %s", exc.message)
            continue
        except Exception:
            log.exception("sweep for lost runs crashed")
            continue
        if ended:
            log.warning("ended %d runs whose instance stopped (instance_lost)", ended)


async def stop_recovery(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
