"""Config: both shipped configs pass the schema; --config strings become the schema's types."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from voice_train.config import coerce_to_schema, config_problems

CONFIG = Path(__file__).resolve().parents[1] / "config"
SCHEMA = yaml.safe_load((CONFIG / "schema.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    """As the workflow reads them: YAML 1.1, then the schema's types (config.yaml says `lr: 2e-5`)."""
    cfg = coerce_to_schema(yaml.safe_load((CONFIG / name).read_text()), SCHEMA)
    jsonschema.validate(cfg, SCHEMA)
    assert config_problems(cfg) == []


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("1e-5", 1e-5),
        ("2E-4", 2e-4),
        ("1.0e-5", 1e-5),
        (".5", 0.5),
        ("5.", 5.0),
        ("+3e-3", 3e-3),
        ("0.00002", 2e-5),
    ],
)
def test_a_number_in_any_usual_notation_is_a_number(written, value):
    # In the file: PyYAML reads `lr: 1e-5` as the string "1e-5"; on the command line every value is a string.
    for raw in (yaml.safe_load(f"lr: {written}")["lr"], written):
        assert coerce_to_schema({"train": {"lr": raw}}, SCHEMA)["train"]["lr"] == pytest.approx(value)


@pytest.mark.parametrize(
    ("written", "value"), [("1e3", 1000), ("1_500", 1500), ("1500.0", 1500), (1500.0, 1500)]
)
def test_an_integer_key_takes_a_whole_number_in_any_notation(written, value):
    steps = coerce_to_schema({"train": {"steps": written}}, SCHEMA)["train"]["steps"]
    assert steps == value and isinstance(steps, int)


@pytest.mark.parametrize("written", ["fast", "nan", "inf", "", "1e-5x", "true"])
def test_nonsense_stays_for_the_validator_to_name(written):
    cfg = yaml.safe_load((CONFIG / "config.yaml").read_text())
    cfg["train"]["lr"] = written
    fixed = coerce_to_schema(cfg, SCHEMA)
    assert fixed["train"]["lr"] == written
    with pytest.raises(jsonschema.ValidationError, match="lr|is not of type"):
        jsonschema.validate(fixed, SCHEMA)


def test_a_prompt_as_long_as_the_sample_is_refused_in_one_line():
    cfg = coerce_to_schema(yaml.safe_load((CONFIG / "config.yaml").read_text()), SCHEMA)
    cfg["sample"].update(duration_s=3, prompt_s=3)
    (problem,) = config_problems(cfg)
    assert "sample.prompt_s (3) must be shorter than sample.duration_s (3)" in problem and "\n" not in problem


def test_strings_from_the_command_line_become_numbers():
    cfg = yaml.safe_load((CONFIG / "config.yaml").read_text())
    cfg["preflight"] = {k: str(v) for k, v in cfg["preflight"].items()}
    cfg["voices"] = {"v1": {"description": "123", "source": "a.flac"}}
    fixed = coerce_to_schema(cfg, SCHEMA)
    jsonschema.validate(fixed, SCHEMA)
    assert fixed["preflight"]["min_bytes"] == 5_000_000
    assert fixed["voices"]["v1"]["description"] == "123", "strings stay strings where the schema wants text"


def test_text_where_a_number_belongs_is_left_for_the_validator():
    fixed = coerce_to_schema({"prepare": {"max_clip_s": "long"}}, SCHEMA)
    assert fixed["prepare"]["max_clip_s"] == "long"
