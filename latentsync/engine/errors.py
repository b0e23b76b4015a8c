"""Errors about rule files and plan files: every problem found, each naming file, line, rule and field."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

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

    def __init__(self, problems: Sequence[Problem], *, path: Optional[str] = None, hint: Optional[str] = None):
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n  ".join(str(problem) for problem in self.problems)
        message = f"{self.title}: {count} problem{'s' if count != 1 else ''}\n  {lines}"
        first = path or next((problem.file for problem in self.problems if problem.file), None)
        super().__init__(message, path=None, hint=hint)
        self.path = first

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["problems"] = [problem.to_dict() for problem in self.problems]
        return data


class RulesError(_ProblemsError):
    """The rules folder is invalid (or two rules clash on the facts at hand). Exit code 2; nothing runs."""

    title = "invalid rules"


class PlanError(_ProblemsError):
    """A plan.yaml (or a job's overrides) is invalid. Exit code 2; nothing runs."""

    title = "invalid plan"
