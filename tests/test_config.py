from __future__ import annotations

from pathlib import Path

import pytest

from genesis.config import PACKAGED_DIR, load_settings, redact_url
from genesis.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_dev_is_the_default_and_fully_embedded() -> None:
    settings = load_settings(environ={})
    assert settings.env == "dev"
    assert settings.redis.url is None
    assert settings.llm.backend == "extractive"
    assert set(settings.agents) == {
        "support",
        "documentation",
        "business_generation",
        "qa",
        "code_review",
        "se_darwin",
    }


def test_genesis_env_picks_the_file() -> None:
    settings = load_settings(environ={"GENESIS_ENV": "staging"})
    assert settings.env == "staging"
    assert settings.llm.backend == "completions"
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_unknown_env_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="GENESIS_ENV='qa'"):
        load_settings(environ={"GENESIS_ENV": "qa"})


def test_var_with_default_and_override() -> None:
    env = {"GENESIS_ENV": "staging", "GENESIS_VLLM_URL": "http://10.0.0.5:8000"}
    assert load_settings(environ=env).llm.base_url == "http://10.0.0.5:8000"


def test_missing_var_names_key_and_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings("production", environ={})
    assert "production.yaml" in str(info.value)
    assert "redis.url" in str(info.value)
    assert "GENESIS_REDIS_URL" in str(info.value)


def test_env_override_of_a_single_key_is_typed() -> None:
    settings = load_settings(environ={"GENESIS__CACHE__TTL_S": "60"})
    assert settings.cache.ttl_s == 60
    assert settings.get("cache.ttl_s") == 60


def test_explicit_overrides_win() -> None:
    settings = load_settings(environ={}, overrides={"llm.max_context_tokens": "1024"})
    assert settings.llm.max_context_tokens == 1024


def test_invalid_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"cache\.ttl_s"):
        load_settings(environ={"GENESIS__CACHE__TTL_S": "-5"})


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="cache.colour"):
        load_settings(environ={"GENESIS__CACHE__COLOUR": "blue"})


def test_dot_path_access_names_unknown_keys() -> None:
    settings = load_settings(environ={})
    assert settings.get("agents.support.top_k") == 5
    with pytest.raises(ConfigError, match="cache.nope"):
        settings.get("cache.nope")


def test_secrets_are_redacted_everywhere_they_could_print() -> None:
    env = {
        "GENESIS_ENV": "staging",
        "GENESIS_REDIS_URL": "redis://:hunter2@cache:6379/0",
        "GENESIS_LLM_API_KEY": "sk-very-secret",
    }
    settings = load_settings(environ=env)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in text
        assert "sk-very-secret" not in text
    assert redact_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"


def test_config_dir_and_packaged_defaults_agree(tmp_path: Path) -> None:
    assert REPO_CONFIG.resolve() == PACKAGED_DIR
    (tmp_path / "dev.yaml").write_text("llm:\n  max_context_tokens: 2048\n")
    assert load_settings(config_dir=tmp_path, environ={}).llm.max_context_tokens == 2048


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "dev.yaml").write_text("llm: [unclosed\n")
    with pytest.raises(ConfigError, match="dev.yaml"):
        load_settings(config_dir=tmp_path, environ={})


def test_default_agent_must_exist() -> None:
    with pytest.raises(ConfigError, match="router.default_agent"):
        load_settings(environ={"GENESIS__ROUTER__DEFAULT_AGENT": "nobody"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:p@ss@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://user:secret@cache/0", "redis://user:***@cache/0"),
        ("redis://cache/0?password=hunter2&db=1", "redis://cache/0?password=***&db=1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redact_url_hides_every_form_of_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("key", ["#abc123", "123456789", "sk-1: x"])
def test_secret_overrides_stay_the_string_given(key: str) -> None:
    settings = load_settings(environ={"GENESIS__LLM__API_KEY": key})
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == key


def test_a_budget_with_no_room_for_a_prompt_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"agents\.\w+\.max_tokens .* llm\.max_context_tokens"):
        load_settings(environ={"GENESIS__LLM__MAX_CONTEXT_TOKENS": "256"})


def test_errors_name_the_override_that_caused_them() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GENESIS__CACHE__TTL_S": "-5"}, overrides={"llm.timeout_s": "3"})
    message = str(info.value)
    assert message.count("environment overrides") == 1
    assert "cache.ttl_s" in message and "--set" in message


def test_auth_defaults_no_keys_and_rate_limits_on() -> None:
    settings = load_settings(environ={})
    assert settings.auth.keys == []
    limits = settings.auth.rate_limits
    assert limits.enabled
    assert limits.bucket("query").burst == 200 and limits.bucket("run").rate_per_s == 0.2
    assert settings.server.host == "127.0.0.1"  # no keys: loopback only


def test_rate_limits_are_overridable_and_validated_by_key() -> None:
    env = {"GENESIS__AUTH__RATE_LIMITS__ENABLED": "false"}
    assert load_settings(environ=env).auth.rate_limits.enabled is False
    env = {"GENESIS__AUTH__RATE_LIMITS__RUN__BURST": "1"}
    assert load_settings(environ=env).auth.rate_limits.run.burst == 1
    with pytest.raises(ConfigError, match=r"auth\.rate_limits\.query\.rate_per_s"):
        load_settings(environ={"GENESIS__AUTH__RATE_LIMITS__QUERY__RATE_PER_S": "0"})


def test_a_plain_key_in_a_config_file_is_kept_only_as_its_digest(tmp_path: Path) -> None:
    import hashlib

    key = "gk_" + "k" * 40
    (tmp_path / "dev.yaml").write_text(
        "auth:\n  keys:\n    - {id: ops, key: '${OPS_KEY}', scopes: [admin]}\n"
    )
    settings = load_settings(config_dir=tmp_path, environ={"OPS_KEY": key})
    assert settings.auth.keys[0].sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr(settings) and key not in str(settings.model_dump())
    with pytest.raises(ConfigError, match="OPS_KEY"):
        load_settings(config_dir=tmp_path, environ={})


def test_the_packaged_files_read_the_same_with_the_fast_yaml_loader() -> None:
    import yaml

    from genesis import config

    for path in sorted(PACKAGED_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert yaml.load(text, Loader=config._YAML_LOADER) == yaml.safe_load(text), path.name
