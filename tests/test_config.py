"""Config: both shipped configs pass the schema; --config strings become the schema's types."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from voice_train.config import coerce_to_schema

CONFIG = Path(__file__).resolve().parents[1] / "config"
SCHEMA = yaml.safe_load((CONFIG / "schema.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    jsonschema.validate(yaml.safe_load((CONFIG / name).read_text()), SCHEMA)


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
