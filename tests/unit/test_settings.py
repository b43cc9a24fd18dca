from __future__ import annotations

import pytest

from entrypoints.settings import SettingsError, load_settings


def test_defaults_need_nothing_installed() -> None:
    settings = load_settings({})
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.llm.chain == ()


def test_nested_env_variables_are_converted_to_their_types() -> None:
    settings = load_settings(
        {
            "SBA_HTTP__PORT": "9001",
            "SBA_LLM__LOADTEST": "true",
            "SBA_RATE_LIMIT__DEFAULT_PER_MINUTE": "20",
        }
    )
    assert (settings.http.port, settings.llm.loadtest) == (9001, True)
    assert settings.rate_limit.default_per_minute == 20


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SBA_HTTP__PORT": "eighty"}, "SBA_HTTP__PORT"),
        ({"SBA_HTTP__PROT": "1"}, "SBA_HTTP__PROT"),
        ({"SBA_NOPE": "1"}, "SBA_NOPE"),
        ({"SBA_LOG__LEVEL": "LOUD"}, "SBA_LOG__LEVEL"),
    ],
)
def test_an_invalid_value_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_toml_file_is_read_and_env_wins(tmp_path) -> None:
    path = tmp_path / "sba.toml"
    path.write_text('data_dir = "/srv/sba"\n[http]\nport = 7000\nhost = "0.0.0.0"\n')
    settings = load_settings({"SBA_CONFIG_FILE": str(path), "SBA_HTTP__PORT": "7001"})
    assert (settings.data_dir, settings.http.host, settings.http.port) == (
        "/srv/sba",
        "0.0.0.0",
        7001,
    )


def test_unreadable_config_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(SettingsError, match="SBA_CONFIG_FILE"):
        load_settings({"SBA_CONFIG_FILE": str(tmp_path / "missing.toml")})


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "SBAX": "1"}).http.port == 8000


def test_lists_and_tables_come_as_json() -> None:
    settings = load_settings(
        {"SBA_TOOLS__ALLOW": '["kb_search", "list_tasks"]', "SBA_TOOLS__TENANTS": '{"acme": ["*"]}'}
    )
    assert settings.tools.allow == ("kb_search", "list_tasks")
    assert settings.tools.tenants == {"acme": ("*",)}
    with pytest.raises(SettingsError, match="SBA_TOOLS__ALLOW"):
        load_settings({"SBA_TOOLS__ALLOW": "[oops"})


def test_the_model_chain_comes_as_json_and_names_bad_entries() -> None:
    chain = '[{"name": "main", "kind": "openai", "base_url": "http://127.0.0.1:9", "model": "m"}]'
    settings = load_settings({"SBA_LLM__CHAIN": chain})
    assert settings.llm.chain[0].kind == "openai"
    with pytest.raises(SettingsError, match="SBA_LLM__CHAIN"):
        load_settings({"SBA_LLM__CHAIN": '[{"name": "x", "kind": "palm"}]'})


def test_the_job_stream_is_named_under_the_redis_key_prefix() -> None:
    assert load_settings({}).job_stream == "sba:jobs"
    assert load_settings({"SBA_REDIS__KEY_PREFIX": "eu:"}).job_stream == "eu:jobs"
    named = load_settings({"SBA_REDIS__KEY_PREFIX": "eu:", "SBA_WORKER__QUEUE": "bulk"})
    assert named.job_stream == "eu:bulk"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SBA_WORKER__QUEUE": "sba:jobs"}, "SBA_WORKER__QUEUE: 'sba:jobs' repeats the key prefix"),
        ({"SBA_WORKER__QUEUE": "jobs{a}"}, "SBA_WORKER__QUEUE: a non-empty name without braces"),
        ({"SBA_WORKER__QUEUE": ""}, "SBA_WORKER__QUEUE: a non-empty name"),
    ],
)
def test_a_queue_name_that_cannot_live_under_the_prefix_is_refused(env, message) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)
