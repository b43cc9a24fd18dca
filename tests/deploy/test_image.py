"""The Dockerfile, read as Docker reads it (no engine runs here): a build stage with the
compilers and a runtime stage without them, a fixed non-root user, a health check on /healthz,
``sba serve --host 0.0.0.0`` by default, real settings only; and a build context that sends
what the build copies and nothing private."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from entrypoints.settings import HttpSettings
from tests.deploy.support import ROOT, settings_of


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def stages() -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            found.append(Stage(words[0], name))
        elif found:
            found[-1].instructions.append((keyword, args))
    return found


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec form: {args}"
    return value


def runtime_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stages()[-1].all("ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def test_the_image_is_built_in_one_stage_and_run_from_another_without_build_tools() -> None:
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert build.name and runtime.name and build.name != runtime.name
    assert any("build-essential" in r for r in build.all("RUN"))
    # The runtime stage copies the finished environment and installs nothing itself.
    assert any(c.startswith(f"--from={build.name} ") for c in runtime.all("COPY"))
    for run in runtime.all("RUN"):
        for tool in ("apt-get", "apk ", "pip ", "gcc", "build-essential", "make "):
            assert tool not in run, f"the runtime stage runs {tool!r}: {run}"
    assert runtime.base.split(":")[0] == build.base.split(":")[0]


def test_the_image_runs_as_a_fixed_user_that_is_not_root() -> None:
    [user] = stages()[-1].all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0


def test_the_image_serves_on_all_interfaces_and_checks_its_own_health() -> None:
    runtime = stages()[-1]
    [entrypoint] = runtime.all("ENTRYPOINT")
    [cmd] = runtime.all("CMD")
    assert exec_form(entrypoint) + exec_form(cmd) == ["sba", "serve", "--host", "0.0.0.0"]
    [check] = runtime.all("HEALTHCHECK")
    assert "/healthz" in check
    probe = exec_form(check.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "SBA_HTTP__PORT" in probe[-1]
    env = runtime_env()
    port = int(env["SBA_HTTP__PORT"])
    assert runtime.all("EXPOSE") == [str(port)]
    assert port == HttpSettings().port


def test_every_variable_the_image_sets_is_a_setting() -> None:
    settings = settings_of(runtime_env(), "Dockerfile")
    assert settings.data_dir == "/var/lib/sba"


def _pattern(rule: str) -> re.Pattern[str]:
    """A .dockerignore rule as Docker reads it: ``*`` within a path segment, ``**`` across
    segments; a rule matching a directory matches everything under it."""
    out = ""
    i = 0
    while i < len(rule):
        if rule.startswith("**", i):
            out += ".*"
            i += 2
        elif rule[i] == "*":
            out += "[^/]*"
            i += 1
        elif rule[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(rule[i])
            i += 1
    return re.compile(f"^{out}$")


def sent(path: str) -> bool:
    """Whether the build context carries ``path`` (the last matching rule decides)."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    keep = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = _pattern(rule.lstrip("!").strip("/"))
        if any(pattern.match(p) for p in prefixes):
            keep = negate
    return keep


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "src/entrypoints/cli/main.py", "src/domain/ids.py"]
)
def test_the_build_context_carries_what_the_build_copies(path) -> None:
    assert (ROOT / path).exists()
    assert sent(path)


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        ".sba/sba.db",
        ".env",
        "tests/conftest.py",
        "bench/run.py",
        "src/sba.egg-info/PKG-INFO",
        "src/entrypoints/__pycache__/settings.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out_history_environments_and_local_data(path) -> None:
    assert not sent(path)


def test_every_source_the_build_copies_is_in_the_context() -> None:
    for stage in stages():
        for args in stage.all("COPY"):
            words = args.split()
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert sent(source), f"COPY {source}: left out of the build context"
