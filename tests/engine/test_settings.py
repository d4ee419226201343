"""engine/settings.py: defaults, environment variables, the .env file, validation and from_values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.settings import Settings

FIELD_ENV_NAMES = [name.upper() for name in Settings.model_fields]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting in the environment, and an empty working folder (so no stray .env is read)."""
    for name in FIELD_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def test_defaults_match_the_documented_table() -> None:
    settings = Settings.from_values({})
    assert isinstance(settings, Settings)
    assert settings.api_v1_str == "/api/v1"
    assert settings.redis_host == "localhost"
    assert settings.redis_port == 6379
    assert settings.redis_cache_ttl == 3600
    assert settings.auth_token.get_secret_value() == "secret-token"
    assert settings.batch_size == 32
    assert settings.model_cache_size == 5
    assert settings.log_level == "INFO"
    assert settings.enable_metrics is True
    assert settings.model_registry_path == Path("model_registry.yaml")
    assert settings.provider_list() == ("auto",)


def test_settings_without_environment_equal_from_values_defaults(clean_env: Path) -> None:
    assert Settings().model_dump() == Settings.from_values({}).model_dump()


def test_the_auth_token_is_not_shown_in_reprs() -> None:
    settings = Settings.from_values({"auth_token": "hunter2-token"})
    assert settings.auth_token.get_secret_value() == "hunter2-token"
    assert "hunter2-token" not in repr(settings)
    assert "hunter2-token" not in str(settings.model_dump())


def test_environment_variables_are_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_V1_STR", "/api/v9")
    monkeypatch.setenv("REDIS_HOST", "cache.internal")
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("REDIS_CACHE_TTL", "60")
    monkeypatch.setenv("AUTH_TOKEN", "from-env")
    monkeypatch.setenv("BATCH_SIZE", "8")
    monkeypatch.setenv("MODEL_CACHE_SIZE", "2")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ENABLE_METRICS", "false")
    monkeypatch.setenv("EXECUTION_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider,")
    monkeypatch.setenv("MODEL_REGISTRY_PATH", "/srv/registry.yaml")
    settings = Settings()
    assert settings.api_v1_str == "/api/v9"
    assert settings.redis_host == "cache.internal"
    assert settings.redis_port == 6380
    assert settings.redis_cache_ttl == 60
    assert settings.auth_token.get_secret_value() == "from-env"
    assert settings.batch_size == 8
    assert settings.model_cache_size == 2
    assert settings.log_level == "DEBUG"
    assert settings.enable_metrics is False
    assert settings.provider_list() == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert settings.model_registry_path == Path("/srv/registry.yaml")


def test_environment_variable_names_are_case_insensitive(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("batch_size", "4")
    assert Settings().batch_size == 4


def test_dotenv_file_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("BATCH_SIZE=16\nREDIS_HOST=redis-from-dotenv\nLOG_LEVEL=warning\nUNRELATED_VARIABLE=1\n")
    settings = Settings()
    assert settings.batch_size == 16
    assert settings.redis_host == "redis-from-dotenv"
    assert settings.log_level == "WARNING"


def test_environment_overrides_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("BATCH_SIZE=16\n")
    monkeypatch.setenv("BATCH_SIZE", "12")
    assert Settings().batch_size == 12


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("port", 70000),
        ("redis_port", "not-a-port"),
        ("redis_cache_ttl", 0),
        ("model_cache_size", 0),
        ("log_level", "LOUD"),
        ("enable_metrics", "maybe"),
        ("intra_op_threads", -1),
        ("max_body_bytes", 10),
    ],
)
def test_invalid_values_raise_validation_error(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.from_values({field: value})
    assert [err["loc"] for err in info.value.errors()] == [(field,)]


def test_invalid_environment_value_raises_validation_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "zero")
    with pytest.raises(ValidationError, match="batch_size"):
        Settings()


def test_invalid_dotenv_value_raises_validation_error(clean_env: Path) -> None:
    (clean_env / ".env").write_text("REDIS_PORT=six\n")
    with pytest.raises(ValidationError, match="redis_port"):
        Settings()


@pytest.mark.parametrize("value", ["debug", "Warning", "error"])
def test_log_level_lower_case_is_accepted(value: str) -> None:
    assert Settings.from_values({"log_level": value}).log_level == value.upper()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/api/v1", "/api/v1"),
        ("api/v2", "/api/v2"),
        ("/api/v3/", "/api/v3"),
        ("//api//", "/api"),
        ("/", ""),
        ("", ""),
    ],
)
def test_api_prefix_is_normalised(value: str, expected: str) -> None:
    assert Settings.from_values({"api_v1_str": value}).api_v1_str == expected


def test_from_values_ignores_environment_and_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("REDIS_HOST=redis-from-dotenv\nLOG_LEVEL=ERROR\n")
    monkeypatch.setenv("BATCH_SIZE", "7")
    monkeypatch.setenv("AUTH_TOKEN", "from-env")
    # Sanity: the environment and .env are really there for Settings().
    assert (Settings().batch_size, Settings().redis_host) == (7, "redis-from-dotenv")

    settings = Settings.from_values({"model_cache_size": 3})
    assert settings.batch_size == 32
    assert settings.redis_host == "localhost"
    assert settings.log_level == "INFO"
    assert settings.auth_token.get_secret_value() == "secret-token"
    assert settings.model_cache_size == 3


def test_from_values_still_validates() -> None:
    with pytest.raises(ValidationError):
        Settings.from_values({"batch_size": -5})
    assert Settings.from_values({"batch_size": "64"}).batch_size == 64


def test_auth_settings_from_the_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.auth_tokens, defaults.metrics_token, defaults.environment) == (None, None, "development")
    monkeypatch.setenv("AUTH_TOKENS", "old-one,older-one")
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me")
    monkeypatch.setenv("ENVIRONMENT", "production")
    settings = Settings()
    assert settings.auth_tokens is not None and settings.auth_tokens.get_secret_value() == "old-one,older-one"
    assert settings.metrics_token is not None and settings.metrics_token.get_secret_value() == "scrape-me"
    assert settings.environment == "production"
    assert "old-one" not in repr(settings) and "scrape-me" not in repr(settings)


def test_blank_auth_tokens_and_metrics_token_are_unset(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKENS", "")
    monkeypatch.setenv("METRICS_TOKEN", "")
    settings = Settings()
    assert (settings.auth_tokens, settings.metrics_token) == (None, None)


@pytest.mark.parametrize("value", ["prod", "staging", ""])
def test_an_unknown_environment_is_refused(clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ENVIRONMENT", value)
    with pytest.raises(ValidationError, match="environment"):
        Settings()
