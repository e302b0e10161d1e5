"""Settings: the contract's environment variables exist, and values parse the way the docs say."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service import contract
from service.settings import Settings


def contract_env_names() -> list[str]:
    return [
        value
        for name, value in vars(contract).items()
        if name.startswith("ENV_") and name != "ENV_PREFIX"
    ]


def test_every_contract_env_var_is_a_settings_field() -> None:
    names = contract_env_names()
    assert len(names) >= 11
    for env in names:
        assert env.startswith(contract.ENV_PREFIX)
        field = env.removeprefix(contract.ENV_PREFIX).lower()
        assert field in Settings.model_fields, f"{env} has no Settings field {field!r}"


def test_every_field_documents_why_it_exists() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_contract_env_vars_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k1\n# comment\n\nk2\n")
    env = {
        contract.ENV_MODEL: "/models/x",
        contract.ENV_MODEL_REVISION: "a" * 40,
        contract.ENV_SERVED_MODEL_NAME: "embed",
        contract.ENV_DTYPE: "bfloat16",
        contract.ENV_MAX_BATCH_TOKENS: "4096",
        contract.ENV_MAX_BATCH_SIZE: "16",
        contract.ENV_MAX_QUEUE_ITEMS: "64",
        contract.ENV_API_KEYS_FILE: str(keys),
        contract.ENV_METRICS_PORT: str(contract.METRICS_PORT),
        contract.ENV_DRAIN_DELAY_SECONDS: "2.5",
        contract.ENV_DRAIN_TIMEOUT_SECONDS: "30",
        "EMBED_API_KEYS": "k3, k4",
        "EMBED_MODEL_ALIASES": "a,b",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.model, s.model_revision, s.served_model_name, s.dtype) == (
        "/models/x",
        "a" * 40,
        "embed",
        "bfloat16",
    )
    assert (s.max_batch_tokens, s.max_batch_size, s.max_queue_items) == (4096, 16, 64)
    assert s.metrics_port == contract.METRICS_PORT
    assert (s.drain_delay_seconds, s.drain_timeout_seconds) == (2.5, 30.0)
    assert s.model_aliases == ["a", "b"]
    assert s.load_api_keys() == {"k1", "k2", "k3", "k4"}


def test_defaults_follow_the_contract() -> None:
    s = Settings()
    assert s.port == contract.SERVICE_PORT
    assert s.metrics_port == 0
    assert s.drain_delay_seconds == contract.DRAIN_DELAY_SECONDS
    assert s.drain_timeout_seconds == contract.DRAIN_TIMEOUT_SECONDS
    assert s.model is None  # the bundled MiniLM
    assert s.allow_download is False


@pytest.mark.parametrize(
    ("env", "value"),
    [
        (contract.ENV_DTYPE, "float8"),
        (contract.ENV_MAX_BATCH_SIZE, "0"),
        (contract.ENV_METRICS_PORT, "70000"),
        (contract.ENV_DRAIN_DELAY_SECONDS, "-1"),
        (contract.ENV_MAX_QUEUE_SECONDS, "0"),
        ("EMBED_MATRYOSHKA_DIMENSIONS", "64,big"),
        ("EMBED_MATRYOSHKA_DIMENSIONS", "0,64"),
        ("EMBED_PROMPTS", '["query: "]'),
        ("EMBED_NORMALIZE", "maybe"),
    ],
)
def test_bad_values_name_the_field(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=env.removeprefix(contract.ENV_PREFIX).lower()):
        Settings()


def test_model_behaviour_settings_parse_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().normalize is None  # unset: the model's modules.json decides
    assert Settings().matryoshka_dimensions is None  # unset: the model's config.json decides
    monkeypatch.setenv("EMBED_NORMALIZE", "true")
    monkeypatch.setenv("EMBED_PROMPTS", '{"query": "query: ", "passage": "passage: "}')
    monkeypatch.setenv("EMBED_DEFAULT_PROMPT_NAME", "query")
    monkeypatch.setenv("EMBED_MATRYOSHKA_DIMENSIONS", " 256, 64 ,128")
    s = Settings()
    assert s.normalize is True
    assert s.prompts == {"query": "query: ", "passage": "passage: "}
    assert s.default_prompt_name == "query"
    assert s.matryoshka_dimensions == [256, 64, 128]
    for word in ("any", "none", "ANY"):
        monkeypatch.setenv("EMBED_MATRYOSHKA_DIMENSIONS", word)
        assert Settings().matryoshka_dimensions == word.lower()


def test_a_named_and_a_literal_default_prompt_exclude_each_other() -> None:
    with pytest.raises(ValidationError, match="default_prompt or default_prompt_name"):
        Settings(default_prompt="query: ", default_prompt_name="query")


def test_queue_must_hold_a_batch() -> None:
    with pytest.raises(ValidationError, match="max_queue_items"):
        Settings(max_queue_items=4, max_batch_size=8)


def test_unreadable_keys_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=contract.ENV_API_KEYS_FILE):
        Settings(api_keys_file=tmp_path / "missing").load_api_keys()
