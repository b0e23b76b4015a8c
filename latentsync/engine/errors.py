"""Errors about rule files and plan files: every problem found, each naming file, line, rule and field."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional, Sequence

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file. `field` is a dotted path (`rules[3].when.gpu_vram_free_gib.lt`)."""

    file: Optional[str]
    message: str
    line: Optional[int] = None
    rule: Optional[str] = None
    field: Optional[str] = None

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + f": {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class _ProblemsError(InvalidInputError):
    title = "invalid input"

    def __init__(self, problems: Sequence[Problem], *, path: Optional[str] = None, hint: Optional[str] = None,
                 total: Optional[int] = None):
        from .limits import MAX_REPORTED_PROBLEMS

        found = list(problems)
        # A broken file of any size yields a readable error: the first problems, then a count.
        self.total = max(total or 0, len(found))
        self.problems = found[:MAX_REPORTED_PROBLEMS]
        count = self.total
        lines = "\n  ".join(str(problem) for problem in self.problems)
        if count > len(self.problems):
            lines += f"\n  ... and {count - len(self.problems)} more (the first {len(self.problems)} are listed)"
        message = f"{self.title}: {count} problem{'s' if count != 1 else ''}\n  {lines}"
        first = path or next((problem.file for problem in self.problems if problem.file), None)
        super().__init__(message, path=None, hint=hint)
        self.path = first

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["problems"] = [problem.to_dict() for problem in self.problems]
        if self.total > len(self.problems):
            data["problems_total"] = self.total
        return data

    def with_file(self, label: str, prefix: Sequence[Any] = ()) -> "_ProblemsError":
        """The same error with problems that named no file (an override checked when the plan was
        resolved) naming `label`, their fields under `prefix` (e.g. `jobs[2]`)."""
        from ..contracts import format_field

        if all(problem.file is not None for problem in self.problems):
            return self
        lead = format_field(list(prefix))
        fixed = [problem if problem.file is not None else
                 replace(problem, file=label, field=".".join(p for p in (lead, problem.field) if p) or None)
                 for problem in self.problems]
        error = type(self)(fixed, hint=self.hint, total=self.total)
        error.__cause__ = self.__cause__
        return error


class RulesError(_ProblemsError):
    """The rules folder is invalid (or two rules clash on the facts at hand). Exit code 2; nothing runs."""

    title = "invalid rules"


class PlanError(_ProblemsError):
    """A plan.yaml (or a job's overrides) is invalid. Exit code 2; nothing runs."""

    title = "invalid plan"
