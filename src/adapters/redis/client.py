"""The Redis connection the adapters share: client construction, the key scheme (a deployment
prefix, then a hash tag so that keys used together land in one Redis Cluster slot), and the
translation of every driver error into ``ServiceUnavailable``.

After a failure the store answers ``ServiceUnavailable`` at once for ``retry_after_s``
instead of waiting on a dead connection per request; the next call after that tries again,
so service comes back by itself when Redis does."""

from __future__ import annotations

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
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    """One client, its key prefix and its failure breaker, shared by every Redis adapter."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "sba:",
        retry_after_s: float = 1.0,
        tracer: Tracer | None = None,
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

    def key(self, partition: str, *parts: str) -> str:
        """``<prefix>{<partition>}:<parts>``: every key of one partition shares a slot."""
        return f"{self.prefix}{{{partition}}}:{':'.join(parts)}"

    def script(self, source: str) -> Any:
        return self.client.register_script(source)

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if self._tracer is None:
            return await self._run(what, call)
        with self._tracer.start_as_current_span(
            f"redis {what}", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
        ):
            return await self._run(what, call)

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        if time.monotonic() < self._down_until:
            raise ServiceUnavailable(f"redis is unreachable ({what} skipped)")
        try:
            return await call()
        except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.failures += 1
            self._down_until = time.monotonic() + self._retry_after_s
            raise ServiceUnavailable(
                f"redis is unreachable ({what}): {type(exc).__name__}"
            ) from exc
        except RedisError as exc:
            raise ServiceUnavailable(f"redis refused {what}: {exc}") from exc

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
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def ping(self) -> None:
        await self.run("ping", self.client.ping)

    async def close(self) -> None:
        await self.client.aclose()
