"""One library entry point that every front end calls: `run_job`.

Front ends (CLI, drop folder, ComfyUI, Ray) build a `JobSpec`, optionally hold a
loaded `RuleSet` (hot reload swaps it between jobs), and call `run_job`.

Contract:
- returns a `JobReport` with status "ok" and writes it as JSON beside the output
  (`<output>.report.json` unless the spec names another path), atomically;
- raises `latentsync.errors.InvalidInputError` (bad plan, rules, media,
  checkpoint: permanent, exit code 2), `OutputError`, `OutOfMemoryError`
  (the fallback ladder was exhausted), or another exception (treat as transient);
- never modifies its inputs; never leaves a partial output behind;
- calls `progress(stage, done, total)` as it goes and stops between chunks when
  `cancel()` returns True (raising `JobCancelled`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import LatentSyncError
from .jobs import CancelCallback, JobReport, JobSpec, ProgressCallback

if TYPE_CHECKING:  # pragma: no cover
    from .engine import RuleSet


class JobCancelled(LatentSyncError):
    """The job was asked to stop (SIGINT, ComfyUI interrupt) between chunks."""


def run_job(
    spec: JobSpec,
    *,
    ruleset: "Optional[RuleSet]" = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCallback] = None,
    benchmark_cache: Optional[Path] = None,
) -> JobReport:
    raise NotImplementedError("run_job is being built")
