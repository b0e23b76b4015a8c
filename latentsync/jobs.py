"""The job contract shared by every front end (CLI, drop folder, ComfyUI, Ray).

A front end builds a `JobSpec` and calls `latentsync.runner.run_job`; it gets a
`JobReport` back. Nothing else crosses that line, so a fake pipeline with the
same signature can stand in for the real one in front-end tests.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass
class JobSpec:
    """One clip to lip-sync, as a plan.yaml job describes it."""

    video: Path
    output: Path
    audio: Optional[Path] = None  # None: the video's own audio track
    weights: str = "random-small"  # folder in the official layout, or "random", "random-1.5", "random-small"
    goal: str = "auto"  # preview | balanced | quality | auto
    quality_preset: Optional[str] = None  # draft | fast | balanced | quality | ultra
    speed_mode: Optional[str] = None  # normal | fast | turbo | ultra
    overrides: dict[str, Any] = field(default_factory=dict)  # setting -> value; the user wins
    assume: dict[str, Any] = field(default_factory=dict)  # pinned facts: gpu (profile name), duration, fps, free_vram_gib, cpu_cores, model
    seed: Optional[int] = None
    report: Optional[Path] = None  # default: <output>.report.json
    contact_sheet: bool = False
    name: Optional[str] = None
    overwrite: bool = False  # replace existing files at the output paths (never an input): latentsync/output_safety.py
    evaluate: list[str] = field(default_factory=list)  # "sync": score input and output (latentsync.quality)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("video", "output", "audio", "report"):
            if data[key] is not None:
                data[key] = str(data[key])
        return data


@dataclass
class StageTiming:
    name: str
    seconds: float


@dataclass
class JobReport:
    """What a finished (or failed) job says about itself; schemas/job_report.schema.json."""

    job: dict[str, Any]
    status: str  # "ok" | "failed"
    output: Optional[str]
    run_plan: dict[str, Any]
    rules_version: Optional[str] = None
    rules_hash: Optional[str] = None
    timings: dict[str, float] = field(default_factory=dict)
    seconds_total: float = 0.0
    video_seconds: float = 0.0
    peak_vram_gib: Optional[float] = None
    peak_rss_gib: Optional[float] = None
    frames_total: int = 0
    frames_without_face: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: Optional[dict[str, Any]] = None
    device: Optional[str] = None
    host: Optional[str] = None
    settings_applied: dict[str, Any] = field(default_factory=dict)
    fallbacks_applied: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    evaluation: Optional[dict[str, Any]] = None  # {"sync": ...} when the job asked (`evaluate: [sync]`)
    warm: dict[str, Any] = field(default_factory=dict)  # what the run found warm (pipeline/warm_start.py)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["evaluation"] is None:
            del data["evaluation"]  # optional: only jobs that asked for an evaluation carry one
        return data


# progress(stage, done, total) — front ends adapt this to tqdm, ComfyUI's bar, Ray.
ProgressCallback = Callable[[str, int, int], None]
# cancel() -> True asks the runner to stop between chunks.
CancelCallback = Callable[[], bool]
