"""The compose stack, checked as far as this machine allows (no Docker engine runs here): the
file passes ``docker compose config``; its services are two API instances, two workers,
Postgres, Redis, a migration that the rest waits for, and HAProxy in front; every variable
is a setting. The HAProxy configuration passes ``haproxy -c`` and, run for real on loopback
in front of two stand-in instances, passes each Server-Sent Events frame on as it is written
and spreads held streams over both instances."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from entrypoints.settings import HttpSettings, Settings
from tests.deploy.support import COMPOSE, HAPROXY, compose_command, interpolate, settings_of, tool
from tests.redis_support import free_port

SBA_SERVICES = {"migrate", "api-1", "api-2", "worker-1", "worker-2"}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Docker would see it: anchors merged, variables substituted."""
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, env or {})


def service_settings(service: dict[str, Any], name: str) -> Settings:
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return settings_of(env, f"compose service {name}")


def test_the_compose_file_passes_docker_compose_config(tmp_path) -> None:
    command = compose_command()
    target = COMPOSE
    if command[-1].endswith("docker-compose"):
        # The standalone docker-compose (1.x) predates the Compose Specification's top-level
        # `name`; it validates everything else, on a copy without it.
        raw = yaml.safe_load(COMPOSE.read_text())
        raw.pop("name", None)
        target = tmp_path / "compose.yaml"
        target.write_text(yaml.safe_dump(raw))
        shutil.copy(HAPROXY, tmp_path / HAPROXY.name)
    out = subprocess.run(
        [*command, "-f", str(target), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "LB_"))},
    )
    assert out.returncode == 0, out.stderr


def test_no_variable_the_compose_file_reads_from_the_host_is_named_like_a_setting() -> None:
    """``sba`` run on the same host would take an ``SBA_*`` variable for a setting, and refuse
    to start on one it does not know."""
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    assert names and not {n for n in names if n.startswith("SBA_")}


def test_the_stack_is_two_apis_two_workers_a_migration_postgres_redis_and_a_balancer() -> None:
    services = compose()["services"]
    assert set(services) == SBA_SERVICES | {"postgres", "redis", "lb"}
    for name in ("api-1", "api-2"):
        assert services[name]["command"] == ["serve", "--host", "0.0.0.0"]
    for name in ("worker-1", "worker-2"):
        assert services[name]["command"] == ["worker"]
    assert "sba db upgrade" in " ".join(services["migrate"]["command"])
    assert services["migrate"]["restart"] == "no"
    # Health checks where something waits on a service or a balancer needs to know.
    for name in ("postgres", "redis", "api-1", "api-2", "worker-1", "worker-2"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and not check.get("disable"), name
    for name in ("api-1", "api-2"):
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])


def test_nothing_starts_before_the_schema_is_migrated() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in SBA_SERVICES - {"migrate"}:
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["redis"]["condition"] == "service_healthy", name
    assert set(services["lb"]["depends_on"]) == {"api-1", "api-2"}


def test_every_variable_is_a_setting_and_the_instances_agree() -> None:
    services = compose()["services"]
    settings = {name: service_settings(services[name], name) for name in SBA_SERVICES}
    first = settings["api-1"]
    for name, s in settings.items():
        assert s.database_url == first.database_url, name
        assert (s.redis_url, s.broker_url) == (first.redis_url, first.broker_url), name
        assert s.job_stream == first.job_stream, name
        assert s.render.link_secret_file == first.render.link_secret_file, name
        assert s.render.blob_path == first.render.blob_path, name
    assert first.database_url and first.database_url.startswith("postgresql+asyncpg://")
    assert first.redis_url and first.broker_url
    # Each worker serves /metrics on the port its health check asks.
    for name in ("worker-1", "worker-2"):
        port = settings[name].telemetry.worker_metrics_port
        assert f"127.0.0.1:{port}/metrics" in " ".join(services[name]["healthcheck"]["test"])
    # Shared state lives on volumes every instance and worker mounts.
    for name in SBA_SERVICES:
        mounts = {v.split(":")[1] for v in services[name]["volumes"]}
        assert Path(first.render.blob_path) in {Path(m) for m in mounts}, name
        assert str(Path(first.render.link_secret_file or "").parent) in mounts, name


def test_the_balancer_sends_traffic_to_both_api_instances_on_their_port() -> None:
    lb = compose()["services"]["lb"]
    [mount] = lb["volumes"]
    source, target, *_ = mount.split(":")
    assert (COMPOSE.parent / source).resolve() == HAPROXY.resolve()
    assert target == "/usr/local/etc/haproxy/haproxy.cfg"
    line = re.compile(r'^\s*server (\S+) "\$\{LB_API_\d-([^}]+)\}"', re.M)
    servers = dict(line.findall(HAPROXY.read_text()))
    port = HttpSettings().port
    assert servers == {"api-1": f"api-1:{port}", "api-2": f"api-2:{port}"}


# --- HAProxy ---------------------------------------------------------------------------------


def haproxy_directives() -> dict[str, list[str]]:
    """Directives by section (``defaults``, ``backend api``, ...), comments dropped."""
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in HAPROXY.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(" ".join(line.split()))
    return sections


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit or "ms"]


def test_the_balancer_neither_buffers_nor_cuts_streams() -> None:
    sections = haproxy_directives()
    everywhere = [d for lines in sections.values() for d in lines]
    assert not [d for d in everywhere if d.startswith("compression")]
    assert "option http-buffer-request" not in everywhere
    assert "option http-server-close" not in everywhere
    assert "option httpclose" not in everywhere
    defaults = sections["defaults"]
    assert "mode http" in defaults and "option http-keep-alive" in defaults
    timeouts = dict(d.split()[1:3] for d in defaults if d.startswith("timeout "))
    heartbeat = HttpSettings().heartbeat_s
    for name in ("client", "server", "tunnel"):
        # An idle stream hears a heartbeat every SBA_HTTP__HEARTBEAT_S; a run may stream long.
        assert seconds(timeouts[name]) >= max(40 * heartbeat, 600), name
    backend = sections["backend api"]
    assert "balance leastconn" in backend
    assert "option httpchk" in backend
    assert any("uri /readyz" in d for d in backend if d.startswith("http-check send"))


def haproxy_env(lb: int, api_1: int, api_2: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "LB_BIND": f"127.0.0.1:{lb}",
        "LB_API_1": f"127.0.0.1:{api_1}",
        "LB_API_2": f"127.0.0.1:{api_2}",
    }


def test_haproxy_accepts_the_configuration() -> None:
    haproxy = tool("haproxy", "checks and runs the compose stack's balancer")
    out = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY)],
        capture_output=True,
        text=True,
        check=False,
        env=haproxy_env(free_port(), free_port(), free_port()),
    )
    assert out.returncode == 0, out.stdout + out.stderr


class StandIn:
    """An API instance in miniature: answers /readyz, and streams SSE on any other path, one
    frame at once and the next only when the test releases it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.checked = 0
        self.streams = 0
        self.release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/readyz":
                    self.checked += 1
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                self.streams += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                await self.chunk(writer, f"id: 1\ndata: first from {self.name}\n\n")
                await self.release.wait()
                await self.chunk(writer, ": ping\n\n")
                await self.chunk(writer, "id: 2\ndata: last\n\n")
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def chunk(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()


@contextlib.asynccontextmanager
async def balancer(a: StandIn, b: StandIn) -> AsyncIterator[int]:
    haproxy = tool("haproxy", "runs the compose stack's balancer")
    servers = [await asyncio.start_server(s.handle, "127.0.0.1", s.port) for s in (a, b)]
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        haproxy,
        "-db",
        "-f",
        str(HAPROXY),
        env=haproxy_env(port, a.port, b.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Ready when it has health-checked both instances (it checks them every 2 s).
        deadline = time.monotonic() + 15
        while not (a.checked and b.checked):
            if proc.returncode is not None and proc.stdout is not None:
                raise AssertionError((await proc.stdout.read()).decode())
            assert time.monotonic() < deadline, "HAProxy did not check both instances"
            await asyncio.sleep(0.05)
        yield port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for server in servers:
            server.close()
            await server.wait_closed()


async def open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/agents/assistant/runs HTTP/1.1\r\nHost: sba\r\n"
        b"Accept: text/event-stream\r\nContent-Length: 2\r\n\r\n{}"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        data = await reader.read(4096)
        if not data:
            break
        seen += data
    return seen


@pytest.mark.e2e
async def test_haproxy_passes_each_frame_on_at_once_and_spreads_streams_over_both() -> None:
    a, b = StandIn("a"), StandIn("b")
    async with balancer(a, b) as port:
        first_reader, first_writer, head = await open_stream(port)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-encoding" not in head.lower()
        # The first frame arrives while the instance still holds the rest of the stream: a
        # buffering proxy would deliver nothing until the end.
        first = await asyncio.wait_for(read_until(first_reader, b"data: first"), 10)
        assert b"data: first from " in first
        second_reader, second_writer, _ = await open_stream(port)
        second = await asyncio.wait_for(read_until(second_reader, b"data: first"), 10)
        # Least connections: the second held stream goes to the other instance.
        assert {a.streams, b.streams} == {1}
        assert first.split(b"first from ")[1][:1] != second.split(b"first from ")[1][:1]

        a.release.set()
        b.release.set()
        for reader in (first_reader, second_reader):
            rest = await asyncio.wait_for(read_until(reader, b"data: last"), 10)
            assert b": ping" in rest and b"data: last" in rest
        for writer in (first_writer, second_writer):
            writer.close()
