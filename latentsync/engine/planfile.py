"""plan.yaml -> JobSpecs: one job, or `jobs: [...]` with optional `defaults`.

Validated against schemas/plan.schema.json with every problem reported (file, line,
field); relative paths are taken relative to the plan file's folder, so a plan
means the same thing from any working directory. The file is only read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..contracts import format_field, iter_schema_problems
from ..jobs import JobSpec
from ..weights import RANDOM_WEIGHTS  # names, not folders: never resolved against the plan's folder
from ..output_safety import (OutputConflict, check_output_paths, planned_outputs, protected_inputs, report_path,
                             one_moment, resolved_key)
from .errors import PlanError, Problem
from .limits import PLAN_LIMITS
from .yamlio import load_yaml

PATH_FIELDS = ("video", "audio", "output", "report")
MERGED_FIELDS = ("overrides", "assume")  # defaults and job are merged key by key


def _resolve(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


def _job_from(fields: dict[str, Any], folder: Path) -> JobSpec:
    values = {key: value for key, value in fields.items() if key != "schema_version"}
    for key in PATH_FIELDS:
        if values.get(key) is not None:
            values[key] = _resolve(folder, values[key])
    weights = values.get("weights")
    if weights is not None and weights not in RANDOM_WEIGHTS:
        values["weights"] = str(_resolve(folder, weights))
    return JobSpec(**values)


def load_plan_file(path: Path) -> list[JobSpec]:
    """Read a plan file into jobs. Raises PlanError (an InvalidInputError, exit 2) naming file and field."""
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise PlanError([Problem(label, "plan file not found" if not path.exists() else "not a file")])
    document, problems = load_yaml(path, label, limits=PLAN_LIMITS)
    if document is None or problems:
        raise PlanError(problems)
    data = document.data
    if not isinstance(data, dict):
        raise PlanError([Problem(label, "expected a mapping: one job (video:, output:) or jobs: [...]", line=1)])
    found = iter_schema_problems(data, "plan")
    if found:
        raise PlanError([Problem(label, problem.message, line=document.line_of(problem.parts),
                                 field=problem.field or None) for problem in found])

    folder = path.resolve().parent
    if "jobs" in data:
        defaults = data.get("defaults", {})
        entries = []
        for index, job in enumerate(data["jobs"]):
            merged = {**defaults, **job}
            for key in MERGED_FIELDS:
                if key in defaults or key in job:
                    merged[key] = {**defaults.get(key, {}), **job.get(key, {})}
            for required in ("video", "output"):
                if required not in merged:
                    problems.append(Problem(label, f"'{required}' is missing (required)",
                                            line=document.line_of(["jobs", index]),
                                            field=format_field(["jobs", index, required])))
            entries.append((["jobs", index], merged))
    else:
        entries = [([], data)]
    if problems:
        raise PlanError(problems)

    specs = [_job_from(fields, folder) for _, fields in entries]
    seen: dict[Path, list] = {}
    for (trail, _), spec in zip(entries, specs):
        output = Path(spec.output)
        if output in seen:
            problems.append(Problem(label, f"output {output} is also the output of {format_field(seen[output])}",
                                    line=document.line_of(trail + ["output"]), field=format_field(trail + ["output"])))
        else:
            seen[output] = trail + ["output"]
    if not problems:
        with one_moment():
            problems += _output_problems(document, path, entries, specs)
    if problems:
        raise PlanError(problems)
    return specs


def _output_problems(document: Any, path: Path, entries: list, specs: list[JobSpec]) -> list[Problem]:
    """No output or report of any job may be the plan, an input of any job, or another job's output.
    Linear in the number of jobs: other jobs' files are looked up by their resolved path."""
    problems: list[Problem] = []
    label = document.label
    owners: dict[str, list[tuple[int, str, Path]]] = {}
    for index, ((trail, _), spec) in enumerate(zip(entries, specs)):
        where = format_field(trail)
        for what, file in planned_outputs(spec) + [p for p in protected_inputs(spec) if p[0] in ("video", "audio")]:
            owners.setdefault(resolved_key(file), []).append((index, f"the {what} of {where}", file))
    for index, ((trail, fields), spec) in enumerate(zip(entries, specs)):
        others = [(what, file) for output_what, output in planned_outputs(spec)
                  for other_index, what, file in owners.get(resolved_key(output), []) if other_index != index]
        try:
            check_output_paths(spec, plan_file=path, others=others)
        except OutputConflict as error:
            key = "report" if error.output == str(report_path(spec)) and "report" in fields else "output"
            problems.append(Problem(label, error.message + (f" ({error.hint})" if error.hint else ""),
                                    line=document.line_of(trail + [key]), field=format_field(trail + [key])))
    return problems
