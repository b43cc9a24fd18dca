"""The dependency rule is a test: import-linter's contracts from pyproject.toml must hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency and must be installed"
    result = subprocess.run(
        [exe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src")},
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def test_domain_modules_import_only_the_standard_library_and_domain() -> None:
    allowed_roots = set(sys.stdlib_module_names) | {"domain", "__future__"}
    offenders = []
    for path in (ROOT / "src" / "domain").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                root = words[1].split(".")[0]
                if root and root not in allowed_roots:
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
