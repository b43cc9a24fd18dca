# SBA task runner. `just` alone lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"
export PYTHONPATH := "src"

# List the recipes
default:
    @{{just_executable()}} --list --unsorted

# Run the server on embedded defaults (SQLite, in-memory cache and queue, offline model)
[group('run')]
serve *ARGS:
    {{bin}}/sba serve {{ARGS}}

# Migrate the configured database
[group('run')]
db-upgrade:
    {{bin}}/sba db upgrade

# Everything CI checks: lint, types, layering, then every test
[group('check')]
test: node-deps lint typecheck layers
    {{bin}}/python -m pytest -q -p no:cacheprovider

# Only the fast tests (no server processes, no node)
[group('check')]
test-fast:
    {{bin}}/python -m pytest -q -m "not e2e"

# ruff lint and format check
[group('check')]
lint:
    {{bin}}/ruff check src tests bench
    {{bin}}/ruff format --check src tests bench

# mypy (strict on domain and application)
[group('check')]
typecheck:
    {{bin}}/mypy

# The dependency rule, as import-linter contracts
[group('check')]
layers:
    {{bin}}/lint-imports

# Format the code
[group('dev')]
fmt:
    {{bin}}/ruff format src tests bench
    {{bin}}/ruff check --fix src tests bench

# Install the npm packages the end-to-end tests drive (skipped when node is absent)
[group('dev')]
node-deps:
    @if command -v npm >/dev/null 2>&1; then cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error; else echo "npm not found: end-to-end client tests will be skipped"; fi

# Benchmarks: writes bench/results/latest.md
[group('bench')]
bench *ARGS:
    {{bin}}/python bench/run.py {{ARGS}}

# A quick benchmark smoke run
[group('bench')]
bench-quick:
    {{bin}}/python bench/run.py --quick

# Soak under faults (2 APIs behind HAProxy, 2 workers, Postgres, Redis): writes bench/results/latest-soak.md
[group('bench')]
soak *ARGS:
    {{bin}}/python bench/soak.py {{ARGS}}
