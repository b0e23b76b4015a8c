"""The contracts between the parts: the JSON Schemas (Draft 2020-12) in `schemas/`,
loaded once, cross-referenced by `$id`.

Validation collects every error and words them for people: a key a schema does not
know is an "unknown field" (an "unknown operator" inside a fact test, an "unknown
fact" where a condition names a fact), each with its dotted field path.

A module of its own, below both the rules engine and the facts: the engine validates
rules and plans, the facts validate the benchmark cache, and neither imports the other
for it.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Union

import math

from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource

from .paths import schemas_dir

PathPart = Union[str, int]

SCHEMA_NAMES = ("rules", "gpu_profiles", "time_model", "rule_tests", "plan", "run_plan", "benchmark_cache", "job_report")
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "exists")

_lock = threading.Lock()


def _is_finite_number(checker: Any, instance: Any) -> bool:
    """`number` in every schema means a finite number: NaN passes `minimum`/`maximum` (every
    comparison with it is false) and would reach the pipeline (a NaN guidance scale paints the
    mouth black), an infinity breaks arithmetic further down."""
    if not Draft202012Validator.TYPE_CHECKER.is_type(instance, "number"):
        return False
    return not isinstance(instance, float) or math.isfinite(instance)


# The validator class every schema is checked with: Draft 2020-12, numbers finite.
SchemaValidator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _is_finite_number))


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def format_field(parts: Iterable[PathPart]) -> str:
    """`("jobs", 0, "goal")` -> `jobs[0].goal`: how messages name a field."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True)
class SchemaProblem:
    parts: tuple[PathPart, ...]
    message: str

    @property
    def field(self) -> str:
        return format_field(self.parts)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.parts else self.message


def schema_path(name: str) -> Path:
    return schemas_dir() / f"{name}.schema.json"


@lru_cache(maxsize=None)
def _registry_and_schemas() -> tuple[Registry, dict[str, dict]]:
    schemas = {name: json.loads(schema_path(name).read_text(encoding="utf-8")) for name in SCHEMA_NAMES}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return registry, schemas


def load_schema(name: str) -> dict:
    return _registry_and_schemas()[1][name]


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    with _lock:
        registry, schemas = _registry_and_schemas()
        return SchemaValidator(schemas[name], registry=registry)


def _describe(error: Any) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(schema.get("properties", {}))
        unknown = sorted(str(key) for key in error.instance if key not in known)
        kind = "operator" if "exists" in known and "lt" in known else "field"
        hint = f" (allowed: {', '.join(sorted(known))})" if known and kind == "operator" else ""
        return ", ".join(f"unknown {kind} {name!r}" for name in unknown) + hint
    if "propertyNames" in error.schema_path:
        values = error.validator_value if error.validator == "enum" else []
        kind = "fact" if "device" in values else "setting" if "steps" in values else "name"
        return f"unknown {kind} {error.instance!r}" + (f" ({error.message})" if error.validator != "enum" else "")
    if error.validator == "enum":
        allowed = ", ".join(_json(value) for value in error.validator_value)
        return f"{_json(error.instance)} is not one of {allowed}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            return f"{error.instance} is not a finite number; expected {expected}"
        return f"wrong type: expected {expected}, got {type(error.instance).__name__} {_json(error.instance)}"
    if error.validator == "required":
        return error.message.replace(" is a required property", " is missing (required)")
    return error.message


def _flatten(errors: Any) -> list[Any]:
    """Open up `anyOf`/`oneOf` failures into the errors of their branches."""
    flat = []
    for error in errors:
        if error.validator in ("anyOf", "oneOf") and error.context:
            flat.extend(_flatten(error.context))
        else:
            flat.append(error)
    return flat


def iter_schema_problems(instance: Any, name: str) -> list[SchemaProblem]:
    found = _flatten(validator(name).iter_errors(instance))
    problems = []
    seen = set()
    for error in sorted(found, key=lambda e: [str(p) for p in e.absolute_path]):
        parts = tuple(error.absolute_path)
        if "propertyNames" in error.schema_path:
            parts = parts + (str(error.instance),)
        problem = SchemaProblem(parts, _describe(error))
        if (problem.parts, problem.message) not in seen:
            seen.add((problem.parts, problem.message))
            problems.append(problem)
    return problems


@lru_cache(maxsize=None)
def definition_validator(name: str, definition: str) -> Draft202012Validator:
    """A validator for `$defs/<definition>` of `schemas/<name>.schema.json`."""
    with _lock:
        registry, schemas = _registry_and_schemas()
        reference = {"$ref": f"{schemas[name]['$id']}#/$defs/{definition}"}
        return SchemaValidator(reference, registry=registry)


def definition_problems(instance: Any, name: str, definition: str) -> list[str]:
    """Human-readable problems of `instance` against one `$defs` entry of a schema."""
    found = _flatten(definition_validator(name, definition).iter_errors(instance))
    problems = []
    for error in sorted(found, key=lambda e: [str(p) for p in e.absolute_path]):
        parts = tuple(error.absolute_path)
        if "propertyNames" in error.schema_path:
            parts = parts + (str(error.instance),)
        text = str(SchemaProblem(parts, _describe(error)))
        if text not in problems:
            problems.append(text)
    return problems


def schema_errors(instance: Any, name: str) -> list[str]:
    """Human-readable problems of `instance` against `schemas/<name>.schema.json` (empty: valid)."""
    return [str(problem) for problem in iter_schema_problems(instance, name)]
