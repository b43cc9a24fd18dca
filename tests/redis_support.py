"""Redis for tests: the machine's Redis with a key prefix per test (removed afterwards), and
private redis-server processes for tests that stop, restart or wrap Redis in TLS."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import redis
import redis.asyncio as aioredis

from adapters.redis.client import RedisStore, create_client
from adapters.redis.wire import Multiplexer
from tests.support import unavailable

REDIS_URL = os.environ.get("SBA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis(url: str = REDIS_URL) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is not reachable at {url}: {exc}")


def new_prefix() -> str:
    return f"sbatest:{uuid.uuid4().hex[:12]}:"


async def drop_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_store(url: str = REDIS_URL, **options: float) -> AsyncIterator[RedisStore]:
    """A store on its own key prefix; its keys are deleted afterwards."""
    require_redis(url)
    prefix = new_prefix()
    store = RedisStore(create_client(url), mux=Multiplexer(url), prefix=prefix, **options)
    try:
        yield store
    finally:
        await store.close()
        await drop_prefix(url, prefix)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of our own on a free port, which a test may stop and start again (on the
    same port, empty, as after a restart without persistence)."""

    def __init__(self, workdir: Path, *, extra: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        self._binary = binary or "redis-server"
        self.port = free_port()
        self._dir = workdir
        self.extra = extra
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, check_url: str | None = None) -> None:
        self._proc = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(check_url or self.url)

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # polling a starting process, not hiding a race

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


@contextlib.contextmanager
def own_redis(workdir: Path, *, extra: tuple[str, ...] = ()) -> Iterator[RedisServer]:
    server = RedisServer(workdir, extra=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()
