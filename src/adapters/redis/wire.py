"""One Redis connection that many callers share, their commands pipelined on it.

Redis answers the commands of a connection in the order it received them, so callers need no
connection each: every caller's commands are appended to one write buffer, written together
once per turn of the event loop, and each reply goes to the oldest caller still waiting. A
caller pays for packing its commands and one future; there is no pool to take a connection
from, no task per write and no timer per call (redis-py's asyncio client spends several times
that per command). Under load, the commands of many requests leave in one write and their
replies arrive in one read.

It serves commands that answer at once (scripts, XADD, ZREM, GET, SET). A blocking command
(``XREAD BLOCK``) would hold up every caller behind it: those go through redis-py's pool.

Failures: a connection that closes, or whose oldest unanswered command has waited longer than
``timeout_s``, is dropped and every caller still waiting on it gets ``ConnectionError`` or
``TimeoutError`` (redis-py's, so the store's breaker treats them like the pool's). The next
call connects again. A caller that gives up (is cancelled) leaves its place in the queue: its
replies, when they come, are read and dropped, so the callers after it still get their own."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_ERRORS: tuple[tuple[str, type[ResponseError] | type[RedisConnectionError]], ...] = (
    ("NOSCRIPT", NoScriptError),
    ("READONLY", ReadOnlyError),
    ("LOADING", BusyLoadingError),
    ("NOAUTH", AuthenticationError),
    ("WRONGPASS", AuthenticationError),
)


def _error(reply: ResponseError) -> Exception:
    """The error a reply names, as redis-py's parser would raise it."""
    message = str(reply)
    for prefix, kind in _ERRORS:
        if message.startswith(prefix):
            return kind(message)
    return reply


class _Waiting:
    """One caller's place in the queue: the replies it expects, and when it gives up waiting."""

    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, deadline: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.deadline = deadline


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._waiting: deque[_Waiting] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis closed the connection: {exc or 'EOF'}"))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := reader.gets()) is not False:
                if isinstance(reply, ResponseError):
                    reply = _error(reply)
                if not waiting:  # a reply nobody asked for: the stream is out of step
                    raise hiredis.ProtocolError("a reply came with no command waiting for it")
                head = waiting[0]
                head.replies.append(reply)
                if len(head.replies) == head.expected:
                    waiting.popleft()
                    if not head.future.done():
                        head.future.set_result(head.replies)
        except hiredis.ProtocolError as exc:
            self._fail(RedisConnectionError(f"Redis sent what is not RESP: {exc}"))

    # -- callers ------------------------------------------------------------------------------

    def send(self, commands: Sequence[Sequence[Any]]) -> asyncio.Future[list[Any]]:
        """The replies to ``commands``, in order; an error reply is an exception in the list."""
        loop = self._loop
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self.closed:
            future.set_exception(RedisConnectionError("the Redis connection is closed"))
            return future
        if not commands:  # no reply to wait for: queued, it would take the next caller's
            future.set_result([])
            return future
        pack = hiredis.pack_command
        # Packed before anything is queued: a command that cannot be packed fails its caller
        # alone and leaves the connection in step.
        packed = [pack(c if type(c) is tuple else tuple(c)) for c in commands]
        out = self._out
        if not out:
            loop.call_soon(self._write)
        out += packed
        self._waiting.append(_Waiting(future, len(commands), loop.time() + self._timeout_s))
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._waiting[0].deadline, self._watch)
        return future

    def _write(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self.closed and out:
            self._transport.write(b"".join(out))

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting or self.closed:
            return
        deadline = self._waiting[0].deadline
        if deadline <= self._loop.time():
            self._fail(
                RedisTimeoutError(f"Redis did not answer within {self._timeout_s:g} s"),
            )
        else:
            self._watchdog = self._loop.call_at(deadline, self._watch)

    def _fail(self, exc: Exception) -> None:
        if self.closed:  # the close we made, reported back by the transport
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        self._out = []
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._fail(RedisConnectionError("the Redis connection was closed by this process"))


class Multiplexer:
    """The shared connection to the Redis a ``redis://`` or ``rediss://`` URL names (user and
    password from the URL unless ``password`` is given, the database from its path)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        tls_ca_file: str | None = None,
        tls_verify: bool = True,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 1.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {parts.scheme}")
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 6379
        self._user = unquote(parts.username) if parts.username else None
        self._password = password or (unquote(parts.password) if parts.password else None)
        path = parts.path.strip("/")
        try:
            self._db = int(path) if path else 0
        except ValueError:
            raise ValueError(
                f"the Redis URL's path names a database number, not {path!r}"
            ) from None
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "rediss":
            context = ssl.create_default_context(cafile=tls_ca_file)
            if not tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self.connects = 0

    def send(self, commands: Sequence[Sequence[Any]]) -> asyncio.Future[list[Any]] | Any:
        """The replies to ``commands`` (an awaitable): on the open connection at once, else
        once connected."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection.send(commands)
        return self._send_connecting(commands)

    async def _send_connecting(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        connecting = self._connecting
        if connecting is None or connecting.done():
            connecting = self._connecting = asyncio.get_running_loop().create_task(self._connect())
        # Shielded: a caller that gives up does not cancel the connection the others wait for.
        connection = await asyncio.shield(connecting)
        return await connection.send(commands)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, self._timeout_s)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await loop.create_connection(
                    lambda: connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
                hello: list[tuple[Any, ...]] = []
                if self._password is not None:
                    credentials = (
                        (self._password,) if self._user is None else (self._user, self._password)
                    )
                    hello.append(("AUTH", *credentials))
                if self._db:
                    hello.append(("SELECT", self._db))
                if hello:
                    for reply in await connection.send(hello):
                        if isinstance(reply, Exception):
                            raise reply
        except TimeoutError:
            connection.close()
            raise RedisTimeoutError(
                f"no connection to Redis at {self._host}:{self._port} "
                f"within {self._connect_timeout_s:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            connection.close()
            raise RedisConnectionError(
                f"cannot connect to Redis at {self._host}:{self._port}: {exc}"
            ) from exc
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self.connects += 1
        return connection

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
