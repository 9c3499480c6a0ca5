"""Config helpers that run before validation."""

from __future__ import annotations

import yaml

_SCALAR_TYPES = {"integer", "number", "boolean"}


def coerce_to_schema(value: object, schema: dict) -> object:
    """Return ``value`` with strings turned into the numbers/booleans the schema expects.

    Snakemake parses a ``--config key='{...}'`` mapping with YAML's base loader, so every
    value nested in it arrives as a string ("1000000"). Where the schema wants a number
    or a boolean and the string reads as one in YAML, it is converted; anything else is
    left as it is, for the validator to report.
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
    if isinstance(value, str) and wanted in _SCALAR_TYPES:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if wanted == "boolean" and isinstance(parsed, bool):
            return parsed
        if (
            wanted in ("integer", "number")
            and isinstance(parsed, (int, float))
            and not isinstance(parsed, bool)
        ):
            return parsed
    return value
