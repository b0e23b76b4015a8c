"""Fault injection for the Ray tests: a fake pipeline whose worker process dies on a clip's first attempt."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import JobReport, JobSpec
from .fake_pipeline import FakePipeline


@dataclass
class CrashOncePipeline:
    """FakePipeline, except that the first attempt at each clip named in `crash` kills its worker (os._exit).

    A marker file in `marker_dir` (shared storage) remembers the first attempt, because a retried
    task starts from a fresh copy of this object in a fresh process.
    """

    marker_dir: Path
    crash: list[str] = field(default_factory=list)
    always_fail: list[str] = field(default_factory=list)  # raise a transient error on every attempt
    pipeline: FakePipeline = field(default_factory=FakePipeline)

    def __call__(self, spec: JobSpec, **kwargs: Any) -> JobReport:
        stem = Path(spec.video).stem
        attempts = Path(self.marker_dir) / f"{stem}.attempts"
        with open(attempts, "a") as handle:  # one line per attempt: the tests count them
            handle.write(f"{os.getpid()}\n")
        if stem in self.always_fail:
            raise RuntimeError(f"simulated device failure for {stem}")
        if stem in self.crash and len(attempts.read_text().splitlines()) == 1:
            os._exit(17)  # the worker dies mid-task, as a segfault or an OOM kill would
        return self.pipeline(spec, **kwargs)
