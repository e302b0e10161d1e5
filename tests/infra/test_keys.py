"""The stack keys are declared once (infra/keys.py): Pulumi.yaml, the README's key table, the
dataclass fields and the all-options render come from the declarations or are checked against
them."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
import yaml

from infra import config, keys
from infra.keys import ConfigError, Errors, Integer, key
from rehearsal.mockengine import ROOT, stacks

README = ROOT / "README.md"


@pytest.fixture
def declare_extra_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """StackKeys with one more declaration, `queueTimeoutSeconds`, that nothing else knows of."""
    extended = pydantic.create_model(
        "StackKeys",
        __base__=keys.StackKeys,
        queueTimeoutSeconds=(
            Integer,
            key(30, "Seconds an input may wait.", fills="inference.queue_timeout", ge=1, le=600),
        ),
    )
    monkeypatch.setattr(keys, "StackKeys", extended)
    keys.specs.cache_clear()
    yield
    keys.specs.cache_clear()


# --- Pulumi.yaml ----------------------------------------------------------------------------------


def test_pulumi_yaml_config_block_is_what_the_declarations_say() -> None:
    text = keys.PULUMI_YAML.read_text()
    assert keys.drift(text) == [], "run: .venv/bin/python -m infra.keys"
    assert keys.with_config_block(text) == text


def test_a_key_declared_but_missing_from_pulumi_yaml_is_named(declare_extra_key: None) -> None:
    problems = keys.drift(keys.PULUMI_YAML.read_text())
    assert problems == ["queueTimeoutSeconds: declared in infra/keys.py but not in Pulumi.yaml"]


def test_a_key_in_pulumi_yaml_but_not_declared_is_named() -> None:
    text = keys.PULUMI_YAML.read_text()
    extra = '  spotPrice:\n    type: string\n    default: ""\n    description: Bid.\n'
    assert keys.drift(text + extra) == [
        "spotPrice: in Pulumi.yaml but not declared in infra/keys.py"
    ]


def test_a_default_edited_in_pulumi_yaml_alone_is_named() -> None:
    text = keys.PULUMI_YAML.read_text()
    edited = text.replace("    default: 16384\n", "    default: 8192\n", 1)
    assert edited != text
    (problem,) = keys.drift(edited)
    assert problem.startswith("maxQueueItems: Pulumi.yaml says"), problem


def test_pulumi_yaml_is_what_the_pulumi_cli_accepts() -> None:
    """pulumi/pulumi sdk/go/common/workspace/project.json ($defs.configTypeDeclaration) and
    project.go `Project.Validate`: only these attributes; `default` and `value` exclusive; an array
    declares `items`; a default of the declared type."""
    schema = yaml.safe_load(keys.PULUMI_YAML.read_text())["config"]
    python_types = {"string": str, "integer": int, "boolean": bool, "array": list}
    for name, decl in schema.items():
        assert set(decl) <= {"type", "items", "description", "secret", "default", "value"}, name
        assert not ("default" in decl and "value" in decl), name
        assert decl.get("description"), f"{name} has no description"
        if "type" not in decl:
            assert "value" in decl, f"{name}: an untyped key carries its project value"
            continue
        assert decl["type"] in python_types, name
        if decl["type"] == "array":
            assert decl["items"] == {"type": "string"}, name
        if "default" in decl:
            assert isinstance(decl["default"], python_types[decl["type"]]), name


def test_every_default_is_a_value_its_key_accepts() -> None:
    for spec in keys.specs().values():
        if spec.required:
            continue
        default = "" if spec.default is None else spec.default
        given = {spec.full: _cli(default)}
        keys.read({**_required_keys(), **given}, Errors("Pulumi.test.yaml"))


# --- The README -----------------------------------------------------------------------------------


def readme_table_keys(readme: str) -> list[str]:
    """The keys named in the first column of the README's key table (section Configuration)."""
    section = readme.split("### Configuration", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [k for row in rows for k in re.findall(r"`([A-Za-z0-9]+)`", row.split(" | ")[0])]


def table_drift(readme: str) -> list[str]:
    named = readme_table_keys(readme)
    declared = list(keys.specs())
    problems = [
        f"{k}: declared but not in the README's key table" for k in declared if k not in named
    ]
    problems += [
        f"{k}: in the README's key table but not declared" for k in named if k not in declared
    ]
    problems += [f"{k}: twice in the README's key table" for k in set(named) if named.count(k) > 1]
    return problems


def test_the_readme_key_table_names_every_declared_key_once() -> None:
    assert table_drift(README.read_text()) == []


def test_the_readme_check_names_a_missing_or_unknown_key(declare_extra_key: None) -> None:
    readme = README.read_text().replace("`grafana`", "`grafanaEnabled`", 1)
    assert table_drift(readme) == [
        "grafana: declared but not in the README's key table",
        "queueTimeoutSeconds: declared but not in the README's key table",
        "grafanaEnabled: in the README's key table but not declared",
    ]


# --- The dataclasses ------------------------------------------------------------------------------


def _field_type(cls: type, name: str) -> Any:
    hints = typing.get_type_hints(cls, vars(config))
    assert name in hints, f"{cls.__name__} has no field {name}"
    hint = hints[name]
    # `X | None`: the dataclass behind the optional.
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    return options[0] if isinstance(hint, types.UnionType) and len(options) == 1 else hint


def test_every_key_fills_a_field_of_the_stack_config() -> None:
    for spec in keys.specs().values():
        owner: Any = config.StackConfig
        for part in spec.fills.split("."):
            assert dataclasses.is_dataclass(owner), f"{spec.name}: fills {spec.fills}"
            owner = _field_type(owner, part)


def test_a_declared_key_whose_field_is_missing_stops_the_parse(declare_extra_key: None) -> None:
    with pytest.raises(TypeError, match=r"queueTimeoutSeconds fills inference\.queue_timeout"):
        config.parse(_required_keys(), "test")


def test_sections_of_pulumi_yaml_follow_the_declarations() -> None:
    order = [spec.section for spec in keys.specs().values()]
    sections = list(dict.fromkeys(order))
    assert sections == list(keys.SECTION_TITLES), "declare each section's keys together"


# --- Reading --------------------------------------------------------------------------------------


def test_a_refusal_names_file_key_value_and_the_declared_bounds() -> None:
    with pytest.raises(ConfigError) as caught:
        keys.read({**_required_keys(), "gpu-inference:hpaTargetGpuUtilization": "120"}, _ERRORS)
    assert str(caught.value) == (
        "Pulumi.test.yaml: gpu-inference:hpaTargetGpuUtilization = 120 is not allowed: "
        "an integer from 1 to 100"
    )


def test_a_bad_item_of_a_list_is_shown_alone() -> None:
    bad = '["api", "everything"]'
    with pytest.raises(ConfigError) as caught:
        keys.read({**_required_keys(), "gpu-inference:controlPlaneLogTypes": bad}, _ERRORS)
    assert (caught.value.value, caught.value.allowed) == (
        "everything",
        "a subset of api, audit, authenticator, controllerManager, scheduler",
    )


@pytest.mark.parametrize("value", ["yes", "1", "on", ""])
def test_booleans_are_true_or_false_only(value: str) -> None:
    with pytest.raises(ConfigError, match="true or false"):
        keys.read({**_required_keys(), "gpu-inference:grafana": value}, _ERRORS)


def test_a_required_key_without_a_value_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        keys.read({}, _ERRORS)
    assert (caught.value.key, caught.value.value) == ("gpu-inference:availabilityZones", None)
    assert caught.value.allowed.startswith("required; ")


def test_a_secret_key_never_shows_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        keys.read({**_required_keys(), "gpu-inference:apiKeys": '["short"]'}, _ERRORS)
    assert caught.value.value == "[secret]"
    assert "short" not in str(caught.value)


def test_a_retired_key_is_refused_with_its_reason_and_declared_nowhere() -> None:
    assert not set(keys.RETIRED_KEYS) & set(keys.specs())
    values = {**_required_keys(), "gpu-inference:kubernetesVersion": "1.34"}
    with pytest.raises(ConfigError) as caught:
        config.parse(values, "test")
    assert caught.value.key == "gpu-inference:kubernetesVersion"
    assert caught.value.allowed == keys.RETIRED_KEYS["kubernetesVersion"]


# --- The all-options render -----------------------------------------------------------------------


def test_every_key_that_defaults_off_says_how_the_all_options_render_turns_it_on() -> None:
    for spec in keys.specs().values():
        assert not (spec.has_on and spec.off), f"{spec.name}: on or off, not both"
        if spec.default_is_off:
            assert spec.has_on or spec.off, (
                f"{spec.name} defaults off: declare on=<value> for the all-options render, or "
                "off=<why no render needs it>"
            )


@pytest.mark.parametrize("stack", stacks())
def test_every_on_value_is_accepted_by_its_key(stack: str) -> None:
    from rehearsal.mockengine import stack_config
    from rehearsal.overlay import all_options

    overlay = all_options(stack)
    assert set(overlay) == {s.name for s in keys.specs().values() if s.has_on}
    values, secret = stack_config(stack, overlay)
    keys.read(values, Errors(f"Pulumi.{stack}.yaml", frozenset(secret)))


# --- Helpers --------------------------------------------------------------------------------------

_ERRORS = Errors("Pulumi.test.yaml")


def _cli(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def _required_keys() -> dict[str, str]:
    """A config that passes every rule: the dev stack's."""
    from rehearsal.mockengine import stack_config

    values, _ = stack_config("dev")
    return values
