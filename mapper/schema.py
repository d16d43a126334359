"""Validation of config and region files against mapper's JSON schemas (``mapper/schemas/``,
package data): unknown keys refused, types checked, defaults filled, each number written as its
schema type; an error is one line naming the file and the key (:func:`validate`)."""

from __future__ import annotations

import copy
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mapper.errors import ConfigError


def _as_schema_number(value: Any, schema: Any) -> Any:
    """``value`` written as the schema's one number type says: an int where it is ``number``
    (10 -> 10.0), an integral float where it is ``integer`` (384.0 -> 384); anything else as it
    is. So the same setting written either way is the same setting: in the run's file, in the
    params Snakemake compares to decide a rerun, and in the code that reads it."""
    if not isinstance(schema, dict) or isinstance(value, bool):
        return value
    types = schema.get("type")
    types = {types} if isinstance(types, str) else set(types or ())
    if "number" in types and "integer" not in types and isinstance(value, int):
        return float(value)
    if "integer" in types and "number" not in types and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


def _with_defaults(validator_class: type) -> type:
    """A validator that fills ``default`` values while validating (as Snakemake's validate does),
    and writes each number as its schema type (:func:`_as_schema_number`)."""
    checks = validator_class.VALIDATORS

    def properties(validator, properties, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
                if name in instance:
                    instance[name] = _as_schema_number(instance[name], sub)
        yield from checks["properties"](validator, properties, instance, schema)

    def additional(validator, extra, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            named = schema.get("properties", {})
            for name in instance:
                if name not in named:
                    instance[name] = _as_schema_number(instance[name], extra)
        yield from checks["additionalProperties"](validator, extra, instance, schema)

    def items(validator, each, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, list):
            instance[:] = [_as_schema_number(v, each) for v in instance]
        yield from checks["items"](validator, each, instance, schema)

    return jsonschema.validators.extend(validator_class, {
        "properties": properties, "additionalProperties": additional, "items": items})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


@cache
def _schema(name: str) -> dict:
    """A schema of ``mapper/schemas/`` (package data, so an installed package finds it too)."""
    return yaml.safe_load((files("mapper") / "schemas" / name).read_text())


DESCRIBED_CHECKS = ("pattern", "minItems", "minimum", "exclusiveMinimum", "maximum",
                   "exclusiveMaximum")
"""Schema checks whose message gives the key's ``description`` too: a bound or a regex alone
says what failed, not what the key is for."""


def _as_written(err: jsonschema.ValidationError, written: Any) -> str:
    """The repr of the value ``err`` is about as the file wrote it (``0``, not the ``0.0`` the
    check saw after :func:`_as_schema_number`); the checked value's where the file did not give
    it (a default) or gave a container."""
    for part in err.absolute_path:
        try:
            written = written[part]
        except (KeyError, IndexError, TypeError):
            return repr(err.instance)
    typed_alike = isinstance(written, (int, float)) and not isinstance(written, bool) \
        and isinstance(err.instance, (int, float)) and written == err.instance
    return repr(written) if typed_alike else repr(err.instance)


def validate(data: dict, schema_name: str, source: str | Path) -> dict:
    """Validate ``data`` in place against ``schema_name``, filling defaults; return it.

    Raises ConfigError with the file, the key path and the problem on one line.
    """
    validator = _Validator(_schema(schema_name))
    written = copy.deepcopy(data)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message, shown = err.message, _as_written(err, written)
        if shown != repr(err.instance) and message.startswith(repr(err.instance)):
            message = shown + message[len(repr(err.instance)):]
        if err.validator == "additionalProperties":
            message = f"{message}; remove it or check its spelling"
        elif err.validator == "anyOf" and "description" in err.schema:
            message = f"{shown} is not {err.schema['description']}"
        elif err.validator in DESCRIBED_CHECKS and "description" in err.schema:
            message = f"{message} ({err.schema['description']})"  # what the key is for
        raise ConfigError(f"{source}: key '{key}': {message}")
    # a default filled by a conditional branch (``if kind: stac then max_cloud: {default: 40}``)
    # carries no type there: a second pass writes it as the key's own schema type, so that a
    # setting left out and the same setting written out are one value
    for _ in validator.iter_errors(data):
        pass
    return data
