"""Moved to `latentsync.contracts` (the facts validate against the schemas too, without the engine).

Kept so that `from latentsync.engine.schemas import ...` and `from .schemas import ...`
inside the engine keep working while callers move over; new code imports
`latentsync.contracts`.
"""
from ..contracts import (
    OPERATORS,
    SCHEMA_NAMES,
    PathPart,
    SchemaProblem,
    definition_problems,
    definition_validator,
    format_field,
    iter_schema_problems,
    load_schema,
    schema_errors,
    schema_path,
    validator,
)

__all__ = [
    "OPERATORS", "SCHEMA_NAMES", "PathPart", "SchemaProblem", "definition_problems", "definition_validator",
    "format_field", "iter_schema_problems", "load_schema", "schema_errors", "schema_path", "validator",
]
