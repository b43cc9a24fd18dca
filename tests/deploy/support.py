"""What the deployment checks share: the tools they run (kubectl, docker compose, haproxy),
the names of SBA's settings, and compose's variable interpolation. A missing tool skips a
check locally and fails it in CI (``.ci/run`` installs them)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from entrypoints.settings import CONFIG_FILE_VAR, ENV_PREFIX, Settings, load_settings
from tests.support import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
HAPROXY = DEPLOY / "compose" / "haproxy.cfg"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())


def tool(name: str, why: str) -> str:
    """The path of ``name``: on PATH, or beside this interpreter (a tool installed as a wheel
    into the virtual environment, as ``.ci/run`` does for kubectl)."""
    found = shutil.which(name)
    beside = Path(sys.executable).parent / name
    if found is None and beside.exists():
        found = str(beside)
    if found is None:
        unavailable(f"{name} is not installed ({why})")
    return found or name


def compose_command() -> list[str]:
    """``docker compose`` (the plugin) or the standalone ``docker-compose``."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return [tool("docker-compose", "validates the compose file")]


def _names(cls: type[msgspec.Struct], prefix: str, into: set[str]) -> None:
    for field in msgspec.structs.fields(cls):
        name = f"{prefix}{field.name.upper()}"
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            _names(field.type, f"{name}__", into)
        else:
            into.add(name)


def setting_names() -> frozenset[str]:
    """Every environment variable SBA reads: one per leaf of the settings tree (tables such as
    ``SBA_CONTENT__TENANTS`` are one variable holding JSON), and ``SBA_CONFIG_FILE``."""
    names: set[str] = {CONFIG_FILE_VAR}
    _names(Settings, ENV_PREFIX, names)
    return frozenset(names)


def settings_of(env: Mapping[str, str], where: str) -> Settings:
    """The settings an environment gives, after checking that each ``SBA_*`` variable in it is
    one SBA reads (the settings loader would refuse an unknown one only at start-up)."""
    known = setting_names()
    unknown = sorted(n for n in env if n.startswith(ENV_PREFIX) and n not in known)
    assert unknown == [], f"{where}: not settings of SBA: {unknown}"
    return load_settings({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})


_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``$$``) over every string of a parsed compose file."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, op = m.group("name"), m.group("op")
            current = env.get(name)
            if op == ":-" and not current:
                return m.group("default")
            if op == "-" and current is None:
                return m.group("default")
            return current or ""

        return _VARIABLE.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value
