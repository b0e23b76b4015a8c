"""One run path for every front end: plan -> settings -> pipeline -> report.

    report = run_job(spec)                                   # files: CLI, drop folder, Ray
    report = run_clip(source, sink, plan, job=..., weights=...)  # any source/sink: ComfyUI, benchmark

`run_job` resolves the run plan from the rules and facts, then `execute_plan` runs it
on the job's files and writes the job report. `run_clip` is the step every caller
shares: it loads the models, builds a `LipSyncPipeline` from the plan's typed
settings, runs it on a frame source and sink, steps down the plan's out-of-memory
ladder when the device runs out, and returns the `JobReport`.

Contract:
- `run_job` returns a `JobReport` with status "ok" and writes it as JSON beside the
  output (`<output>.report.json` unless the spec names another path), atomically;
- raises `latentsync.errors.InvalidInputError` (bad plan, rules, media,
  checkpoint: permanent, exit code 2), `OutputError`, `OutOfMemoryError`
  (the fallback ladder was exhausted), or another exception (treat as transient);
- never modifies its inputs; never leaves a partial output behind;
- calls `progress(stage, done, total)` as it goes and stops between chunks when
  `cancel()` returns True (raising `JobCancelled`).
"""
from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from loguru import logger

from .atomic import atomic_write_json
from .errors import MediaError, OutOfMemoryError
from .jobs import CancelCallback, JobReport, JobSpec, ProgressCallback
from .output_safety import check_outputs, contact_sheet_path, report_path
from .quality.jobs import check_evaluations, evaluate_job
from .pipeline import warm_start
from .pipeline.lipsync import JobCancelled, PipelineResult  # noqa: F401  (JobCancelled: front ends catch it here)
from .settings import RunSettings

if TYPE_CHECKING:  # pragma: no cover
    from .engine import RuleSet, RunPlan


def report_path_for(spec: JobSpec) -> Path:
    return report_path(spec)


def _check_inputs(spec: JobSpec) -> None:
    from .video import check_video_output

    check_outputs(spec)  # no output may replace an input or a file this job did not make
    video = Path(spec.video)
    if not video.is_file():
        raise MediaError("input video not found", path=video, hint="check the plan's `video:` path")
    if spec.audio is not None and not Path(spec.audio).is_file():
        raise MediaError("input audio not found", path=spec.audio, hint="check the plan's `audio:` path")
    inputs = [video] + ([Path(spec.audio)] if spec.audio else [])
    check_video_output(Path(spec.output), inputs=inputs)


def run_job(
    spec: JobSpec,
    *,
    ruleset: "Optional[RuleSet]" = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCallback] = None,
    benchmark_cache: Optional[Path] = None,
) -> JobReport:
    """Resolve the run plan for `spec` from the rules and facts, then execute it."""
    from .engine import gather_facts, load_ruleset, resolve_plan

    _check_inputs(spec)
    check_evaluations(spec)  # before any work: a missing scorer file is exit 2 now, not after the run
    ruleset = ruleset if ruleset is not None else load_ruleset()
    facts = gather_facts(spec, ruleset, benchmark_cache=benchmark_cache)
    plan = resolve_plan(spec, facts, ruleset)
    logger.info("run plan for {} (rules {} {}):\n{}", spec.video, plan.rules_version, plan.rules_hash[:12],
                plan.explain_table())
    return execute_plan(spec, plan, progress=progress, cancel=cancel)


def execute_plan(spec: JobSpec, plan: "RunPlan", *, progress=None, cancel=None) -> JobReport:
    """Run a resolved plan on the job's files and write the job report beside the output."""
    from .pipeline.clips import FileClipSource, VideoFileSink

    source = FileClipSource(Path(spec.video), Path(spec.audio) if spec.audio else None)

    def sink_for(settings: RunSettings) -> VideoFileSink:
        return VideoFileSink(Path(spec.output), inputs=source.protected_paths(), crf=settings.encoder_crf,
                             preset=settings.encoder_preset)

    scorer_weights = check_evaluations(spec)
    report = run_clip(source, sink_for, plan, weights=spec.weights, job=spec.to_dict(), output=str(spec.output),
                      contact_sheet=contact_sheet_path(spec) if spec.contact_sheet else None,
                      progress=progress, cancel=cancel)
    if scorer_weights is not None:
        evaluate_job(spec, report, scorer_weights, plan.settings)
    atomic_write_json(report_path_for(spec), report.to_dict())
    return report


@dataclass
class Attempt:
    """The outcome of `run_with_fallbacks`: the result and what it took to get there."""

    result: PipelineResult
    settings: RunSettings
    fallbacks_applied: list[dict]
    warnings: list[str]
    load_seconds: float
    warm: dict = field(default_factory=dict)  # the job report's `warm` section (pipeline/warm_start.py)


def run_with_fallbacks(weights: str, settings: RunSettings, fallbacks, run, *, goal: Optional[str] = None) -> Attempt:
    """Build the pipeline and call `run(pipeline, settings)`; on device out-of-memory apply the
    plan's fallback steps in order (each on top of the previous ones) and run the whole clip
    again. A failed attempt leaves no output (sinks start over when opened)."""
    import torch

    ladder = list(fallbacks or [])
    applied: list[dict] = []
    warnings: list[str] = []
    load_seconds = 0.0
    while True:
        try:
            started = time.perf_counter()
            resident = _models_resident(weights, settings)
            pipeline = build_pipeline(weights, settings)
            load_seconds += time.perf_counter() - started
            warm = warm_start.before_run(pipeline, models_resident=resident)
            result = run(pipeline, settings)
            return Attempt(result, settings, applied, warnings, load_seconds,
                           warm=warm_start.after_run(warm, pipeline, result.stats, goal=goal))
        except torch.OutOfMemoryError as exc:
            pipeline = None  # noqa: F841  (drop the failed attempt's tensors before retrying)
            _free_device_memory()
            if not ladder:
                raise OutOfMemoryError(
                    f"out of device memory and no fallback left ({len(applied)} tried)",
                    hint="free VRAM (close other programs), or lower frames_per_batch / resolution in the plan",
                ) from exc
            step = ladder.pop(0)
            settings = settings.replace(**step["set"])
            applied.append(step)
            message = f"out of memory: stepping down to {step['set']} (rule {step['rule']})"
            logger.warning(message)
            warnings.append(message)


def _models_resident(weights: str, settings: RunSettings) -> bool:
    from .pipeline.levers import resolve_device
    from .weights import models_resident

    device, dtype, _ = resolve_device(settings)
    return models_resident(weights, device=str(device), dtype=dtype)


def build_pipeline(weights: str, settings: RunSettings):
    """The pipeline for these settings on these weights; models come from the process's cache
    (a resident process loads them once), compiled graphs from the models."""
    from .pipeline.levers import needs_fresh_models, resolve_device
    from .pipeline.lipsync import LipSyncPipeline
    from .weights import clear_model_cache, load_models

    device, dtype, _ = resolve_device(settings)
    models = load_models(weights, device=str(device), dtype=dtype, seed=settings.seed)
    if needs_fresh_models(models, settings):
        logger.info("memory format changes from {}: loading the models again", models.memory_format)
        clear_model_cache()
        models = load_models(weights, device=str(device), dtype=dtype, seed=settings.seed)
    return LipSyncPipeline(models, settings)


def run_clip(source, sink, plan: "RunPlan", *, weights: str, job: dict[str, Any], output: Optional[str] = None,
             contact_sheet: Optional[Path] = None, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelCallback] = None) -> JobReport:
    """Run `plan` on one clip from `source` into `sink` (a sink, or a function of the settings that
    makes one); returns the job report (not written anywhere: callers with files write it)."""
    started = time.perf_counter()

    def run(pipeline, settings: RunSettings) -> PipelineResult:
        target = sink(settings) if callable(sink) else sink
        return pipeline(source, target, progress=progress, cancel=cancel, contact_sheet=contact_sheet)

    attempt = run_with_fallbacks(weights, plan.settings, plan.fallbacks, run, goal=getattr(plan, "goal", None))
    result = attempt.result
    timings = {"load_models": attempt.load_seconds, **result.timings}
    return JobReport(
        job=job,
        status="ok",
        output=output,
        run_plan=plan.to_dict(),
        rules_version=plan.rules_version,
        rules_hash=plan.rules_hash,
        timings=timings,
        seconds_total=time.perf_counter() - started,
        video_seconds=result.video_seconds,
        peak_vram_gib=result.peak_vram_gib,
        peak_rss_gib=_peak_rss_gib(),
        frames_total=result.frames_total,
        frames_without_face=result.frames_without_face,
        warnings=list(plan.notes) + attempt.warnings + result.warnings,
        device=result.device,
        host=platform.node(),
        settings_applied=attempt.settings.to_dict(),
        fallbacks_applied=attempt.fallbacks_applied,
        stats=result.stats,
        warm=attempt.warm,
    )


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _peak_rss_gib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (2**30 if sys.platform == "darwin" else 2**20)
