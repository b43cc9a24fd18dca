"""The Redis connection the adapters share: client construction, the key scheme (a deployment
prefix, then a hash tag so that keys used together land in one Redis Cluster slot), and the
translation of every driver error into ``ServiceUnavailable``.

After a failure the store answers ``ServiceUnavailable`` at once for ``retry_after_s``
instead of waiting on a dead connection per request; the next call after that tries again,
so service comes back by itself when Redis does."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind, Tracer
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.wire import Multiplexer
from application.errors import ServiceUnavailable

log = logging.getLogger("sba.redis")
T = TypeVar("T")


def create_client(
    url: str,
    *,
    cluster: bool = False,
    password: str | None = None,
    tls_ca_file: str | None = None,
    tls_verify: bool = True,
    timeout_s: float = 1.0,
    connect_timeout_s: float = 1.0,
    max_connections: int = 64,
) -> Any:
    """A client for ``redis://`` or ``rediss://`` (TLS) URLs. ``password`` (from a secret file)
    wins over one in the URL; ElastiCache and Upstash put the user name in the URL."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        # One quick retry for a connection the server closed; outages are the breaker's job.
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": False,
    }
    if password:
        options["password"] = password
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required" if tls_verify else "none"
        options["ssl_check_hostname"] = tls_verify
        if tls_ca_file:
            options["ssl_ca_certs"] = tls_ca_file
    if cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, max_connections=max_connections, **options)


class Lua:
    """A script that pipelines call by its SHA1. (redis-py's own script objects make every
    pipeline that holds one ask Redis first whether the script exists: a round trip more.)"""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def call(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The command that runs the script, for ``RedisStore.pipeline``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class RedisStore:
    """One client, its key prefix and its failure breaker, shared by every Redis adapter.

    With ``max_calls`` (the client's connection limit) at most that many calls are in flight:
    the others wait their turn, for up to ``call_wait_s``, instead of the client failing them
    for want of a connection (which would look like Redis being down and open the breaker for
    everyone). A call that waited longer fails with ``ServiceUnavailable`` ``redis_busy``."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "sba:",
        retry_after_s: float = 1.0,
        tracer: Tracer | None = None,
        max_calls: int | None = None,
        call_wait_s: float = 5.0,
        mux: Multiplexer | None = None,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix cannot contain braces (they mark hash tags)")
        self.client = client
        self.prefix = prefix
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self.failures = 0
        # When set, each call is a client span named after what it does.
        self._tracer = tracer
        self._max_calls = max_calls
        self._calls = asyncio.Semaphore(max_calls) if max_calls else None
        self._call_wait_s = call_wait_s
        self._busy_logged_at = 0.0
        self.busy = 0
        # Commands that answer at once share one pipelined connection when there is one.
        self.mux = mux

    def key(self, partition: str, *parts: str) -> str:
        """``<prefix>{<partition>}:<parts>``: every key of one partition shares a slot."""
        return f"{self.prefix}{{{partition}}}:{':'.join(parts)}"

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._tracer is None:
            return await self._run(what, call)
        with self._tracer.start_as_current_span(
            f"redis {what}", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
        ):
            return await self._run(what, call)

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if (left := self._down_until - time.monotonic()) > 0:
            raise ServiceUnavailable(f"redis is unreachable ({what} skipped)", retry_after_s=left)
        calls = self._calls
        if calls is None:
            return await self._call(what, call)
        if calls.locked():
            await self._wait_for_connection(calls, what)
        else:
            await calls.acquire()  # free: returns at once
        try:
            return await self._call(what, call)
        finally:
            calls.release()

    async def call(
        self, what: str, commands: Sequence[tuple[Any, ...]], scripts: Sequence[Lua] = ()
    ) -> list[Any]:
        """``run`` of ``pipeline``. On the shared connection there is no connection to wait
        for, so only the breaker (and the span, when tracing) stands before the call."""
        if self.mux is None or self._tracer is not None:
            return await self.run(what, functools.partial(self.pipeline, commands, scripts))
        if (left := self._down_until - time.monotonic()) > 0:
            raise ServiceUnavailable(f"redis is unreachable ({what} skipped)", retry_after_s=left)
        return await self._call(what, functools.partial(self.pipeline, commands, scripts))

    async def eval(self, what: str, script: Lua, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``script``'s reply, called by its SHA1 (loaded when Redis does not hold it)."""
        return (await self.call(what, [script.call(keys, args)], (script,)))[0]

    async def _wait_for_connection(self, calls: asyncio.Semaphore, what: str) -> None:
        try:
            async with asyncio.timeout(self._call_wait_s):
                await calls.acquire()
        except TimeoutError:
            self.busy += 1
            message = (
                f"all {self._max_calls} redis connections stayed busy for "
                f"{self._call_wait_s:g} s ({what} not sent)"
            )
            now = time.monotonic()
            if now - self._busy_logged_at >= 1.0:
                self._busy_logged_at = now
                log.warning("%s; %d such calls so far", message, self.busy)
            raise ServiceUnavailable(message, code="redis_busy", retry_after_s=1.0) from None

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except MaxConnectionsError as exc:
            # This process's pool is exhausted: Redis itself is fine, so no breaker.
            raise ServiceUnavailable(
                f"redis connections exhausted ({what})", code="redis_busy", retry_after_s=1.0
            ) from exc
        except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.failures += 1
            self._down_until = time.monotonic() + self._retry_after_s
            raise ServiceUnavailable(
                f"redis is unreachable ({what}): {type(exc).__name__}"
            ) from exc
        except RedisError as exc:
            # The server's words may quote keys and arguments: the log has them, not the error.
            log.warning("redis refused %s: %s: %s", what, type(exc).__name__, exc)
            raise ServiceUnavailable(f"redis refused {what}") from exc

    async def pipeline(
        self, commands: Sequence[tuple[Any, ...]], scripts: Sequence[Lua] = ()
    ) -> list[Any]:
        """Sends ``commands`` in one round trip and returns their replies in order; raises the
        first command's error, if any, once all have run. Scripts Redis does not hold (after a
        restart or a failover) are loaded and the calls that missed them sent again, alone: the
        other commands ran once and are not repeated. Call it inside ``run``."""
        replies = await self._send(commands)
        missed = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missed:
            for script in scripts:
                await self.client.script_load(script.source)
            again = await self._send([commands[i] for i in missed])
            for i, reply in zip(missed, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self.mux is not None:
            try:
                replies: list[Any] = await self.mux.send(commands)
            except RedisConnectionError:
                # Once more on a new connection, as redis-py's pool does: the server may have
                # closed this one (a restart, an idle timeout) before the commands reached it.
                replies = await self.mux.send(commands)
            return replies
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replied: list[Any] = await pipe.execute(raise_on_error=False)
        return replied

    async def ping(self) -> None:
        if self.mux is None:
            await self.run("ping", self.client.ping)
        else:
            await self.call("ping", [("PING",)])

    async def close(self) -> None:
        if self.mux is not None:
            await self.mux.close()
        await self.client.aclose()
