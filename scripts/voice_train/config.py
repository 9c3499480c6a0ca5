"""Config helpers: read values as the schema's types before validation, then check what the
schema cannot (relations between keys)."""

from __future__ import annotations

import math

import yaml

_SCALAR_TYPES = {"integer", "number", "boolean"}


def _as_number(value: object, wanted: str) -> object:
    """``value`` as an int or float where it reads as one in any usual notation; else unchanged.

    YAML 1.1 (PyYAML, Snakemake's reader) takes ``1e-5`` for a string: it wants ``1.0e-5``.
    People write ``1e-5``, ``2E-4``, ``.5``, ``1_000`` and ``1e3``: all are numbers here. Where
    an integer is wanted, a number without a fraction (``1e3``, ``1000.0``) becomes an int.
    Non-finite values (``inf``, ``nan``) and text (``fast``) are left for the validator.
    """
    number: object = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = yaml.safe_load(text) if text else value
        except yaml.YAMLError:
            number = value
        if isinstance(number, str) or number is None:
            try:
                number = float(text)
            except ValueError:
                return value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return value
    if isinstance(number, float) and not math.isfinite(number):
        return value
    if wanted == "integer" and isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def coerce_to_schema(value: object, schema: dict) -> object:
    """Return ``value`` with strings turned into the numbers/booleans the schema expects.

    Snakemake parses a ``--config key='{...}'`` mapping with YAML's base loader, so every
    value nested in it arrives as a string ("1000000"); and YAML 1.1 reads ``1e-5`` in the
    config file as a string too. Where the schema wants a number or a boolean and the value
    reads as one, it is converted; anything else is left as it is, for the validator to report.
    """
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            key: coerce_to_schema(item, props.get(key, extra if isinstance(extra, dict) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce_to_schema(item, schema["items"]) for item in value]
    wanted = schema.get("type")
    if not isinstance(wanted, str) or wanted not in _SCALAR_TYPES:  # a list of types: nullable strings
        return value
    if wanted == "boolean":
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return parsed if isinstance(parsed, bool) else value
        return value
    return _as_number(value, wanted)


def config_problems(config: dict) -> list[str]:
    """What the schema cannot see: relations between keys. Each problem is one line naming the
    keys and the fix; an empty list means the config is sound."""
    problems = []
    sample = config.get("sample", {})
    if sample.get("prompt_s", 0) >= sample.get("duration_s", math.inf):
        problems.append(
            f"sample.prompt_s ({sample['prompt_s']}) must be shorter than sample.duration_s "
            f"({sample['duration_s']}): the continuation carries the prompt on to that length; "
            "lower sample.prompt_s or raise sample.duration_s"
        )
    prepare = config.get("prepare", {})
    if prepare.get("min_clip_s", 0) > prepare.get("max_clip_s", math.inf):
        problems.append(
            f"prepare.min_clip_s ({prepare['min_clip_s']}) is longer than prepare.max_clip_s "
            f"({prepare['max_clip_s']}): no clip could be kept; lower min_clip_s or raise max_clip_s"
        )
    return problems
