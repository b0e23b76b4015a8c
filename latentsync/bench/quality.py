"""`latentsync-bench --quality CLIP`: every goal on the user's own clip, through the user's run
path, scored for lip sync; the results become this card's benchmark entry's `quality` section.

For each goal (`quality` first: it is the reference), the plan the rules resolve for that goal
on this machine and this clip (`gather_facts` + `resolve_plan`, as `latentsync-run` resolves
it) runs through `execute_plan` -> `run_clip` into a video file (the same source, sink and
out-of-memory ladder as a user's job). Then, per goal:

- seconds per video-second: the run's wall time, model loading excluded, over the clip's length
  (and the GPU stage alone, comparable with the speed modes `latentsync-bench --quick` times);
- the StableSyncNet scores of its output against the driving audio (`latentsync.quality`,
  one scorer per process: `latentsync.quality.jobs.sync_scorer`);
- `sync_drop(quality output, goal output)` in confidence (positive: worse), and in sync probability;
- lower-face PSNR against the quality goal's output (`latentsync.quality.psnr`).

The entry (schemas/benchmark_cache.schema.json) is read again just before the write and only
its `quality` and `quality_run` sections change (a card without an entry gets one holding no
speed measurements); the write is atomic, so an interrupted run leaves the cache as it was.
The rules read `sync_drop_preview` / `sync_drop_balanced` from it (rules/v1/22_goal_sync.yaml).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from loguru import logger

from ..errors import CheckpointError, InvalidInputError, LatentSyncError, MediaError
from ..facts.benchmark import (benchmark_key, read_benchmark_cache,
                               update_benchmark_cache)
from ..facts.gpu import GpuFacts, probe_gpu
from ..jobs import JobSpec, ProgressCallback
from .cases import describe
from .core import BenchmarkOptions, _Progress, _shrink, cache_problem, open_cache_path

QUALITY_GOALS = ("quality", "balanced", "preview")  # the reference first: the others are compared with it
REFERENCE_GOAL = "quality"
DROP_METRIC = "confidence"


@dataclass
class GoalQuality:
    """One goal's run on the clip and the scores of its output."""

    goal: str
    plan: str  # short name of the resolved settings (scheduler, steps, CFG, DeepCache, batch)
    settings: dict[str, Any]
    fired_rules: list[str]
    video_seconds: float
    seconds: float  # wall seconds of the run, model loading excluded
    seconds_per_video_second: float
    gpu_seconds_per_video_second: Optional[float]
    peak_vram_gib: Optional[float]
    frames: int
    frames_without_face: int
    fallbacks_applied: list[str]
    sync: dict[str, Any]  # latentsync.quality.report.summary of the output's score
    sync_drop: Optional[float] = None  # reference confidence minus this goal's
    sync_drop_probability: Optional[float] = None
    psnr_vs_quality: Optional[float] = None  # dB; None for the reference, or identical outputs
    output: Optional[str] = None  # kept only with `outputs=`

    def cache_item(self) -> dict[str, Any]:
        """This goal's item of the cache entry's `quality` section."""
        item: dict[str, Any] = {
            "plan": self.plan,
            "seconds_per_video_second": round(max(self.seconds_per_video_second, 1e-6), 4),
            "sync_probability": round(float(self.sync["sync_probability"]), 6),
            "sync_confidence": round(float(self.sync["confidence"]), 6),
            "sync_best_offset": int(self.sync["best_offset"]),
            "sync_drop": round(float(self.sync_drop or 0.0), 6),
            "sync_drop_probability": round(float(self.sync_drop_probability or 0.0), 6),
            "psnr_vs_quality": None if self.psnr_vs_quality is None else round(self.psnr_vs_quality, 3),
        }
        if self.gpu_seconds_per_video_second is not None:
            item["gpu_seconds_per_video_second"] = round(self.gpu_seconds_per_video_second, 4)
        return item


@dataclass
class QualityReport:
    """What `latentsync-bench --quality` found. `text` is the table and notes."""

    clip: str
    audio: Optional[str]
    clip_seconds: float
    weights: str
    weights_kind: str
    random_weights: bool
    gpu: dict[str, Any]
    device: str
    scorer: str
    scorer_stride: int
    goals: list[GoalQuality]
    entry: Optional[dict[str, Any]]
    cache_path: Path
    auto: Optional[dict[str, Any]]  # what auto resolves for this clip with the new measurements
    notes: list[str]
    seconds: float
    options: dict[str, Any]
    mode: str = "quality"
    text: str = ""
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cache_path"] = str(self.cache_path)
        return data


# ---------------------------------------------------------------- checks before any work


def check_quality_inputs(clip: str | Path, audio: str | Path | None,
                         weights: Optional[str]) -> tuple[Path, Optional[Path], str]:
    """(clip, audio, the scorer's weights) or a LatentSyncError (exit 2) saying what is wrong: no
    weights, a clip missing, unreadable or without audio, weights without `stable_syncnet.pt`."""
    from ..facts.clip import probe_clip
    from ..quality.jobs import check_evaluations
    from ..weights import SYNCNET_FILE, check_weights_folder, is_random

    if weights is None:
        raise InvalidInputError("--quality needs --weights DIR: the weights to run and the folder holding "
                                "stable_syncnet.pt",
                                hint="--weights random-small runs the code path (numbers meaningless)")
    clip_path = Path(clip).expanduser()
    if not clip_path.is_file():
        raise MediaError("clip not found", path=clip_path,
                         hint="latentsync-bench --quality CLIP: a video file with a face")
    audio_path = Path(audio).expanduser() if audio is not None else None
    if audio_path is not None and not audio_path.is_file():
        raise MediaError("audio not found", path=audio_path, hint="--audio A: the driving audio (wav, mp3, ...)")
    facts = probe_clip(clip_path, audio_path)  # MediaError when unreadable
    if not facts.audio_present:
        raise MediaError("the clip has no audio track", path=clip_path,
                         hint="pass the driving audio with --audio A")
    if facts.frame_count < 16:
        raise MediaError(f"the clip has {facts.frame_count} frames; lip-sync scores need at least 16",
                         path=clip_path)
    # The scorer's weights first: a folder without stable_syncnet.pt is exit 2 naming the file.
    if not is_random(str(weights)) and not (Path(weights) / SYNCNET_FILE).is_file():
        raise CheckpointError(f"--quality scores lip sync with {SYNCNET_FILE}: not in the weights folder",
                              path=Path(weights) / SYNCNET_FILE,
                              hint="run `latentsync-run fetch-weights DIR` (it fetches the SyncNet too), or "
                                   "--weights random-small to exercise the code path (numbers meaningless)")
    scorer = check_evaluations(JobSpec(video=clip_path, output=clip_path.with_suffix(".unused.mp4"),
                                       weights=str(weights), evaluate=["sync"]))
    if not is_random(str(weights)):
        check_weights_folder(Path(weights))
    return clip_path, audio_path, str(scorer)


# ---------------------------------------------------------------- the cache entry


def write_quality_section(path: Path, gpu: GpuFacts, section: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Put `section` and `run` into this card's entry (same key), keeping everything else it holds;
    a card without an entry gets one with no speed measurements. Validated, atomic. Returns the entry."""
    key = benchmark_key(gpu)
    existing: Optional[dict[str, Any]] = None
    if path.is_file() and cache_problem(path) is None:
        entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
        existing = next((item for item in reversed(entries) if item["key"] == key), None)
    if existing is not None:
        entry = {**existing, "quality": section, "quality_run": run}
    else:
        entry = {"key": key, "measured_at": run["measured_at"], "modes": {}, "quality": section, "quality_run": run,
                 "note": "latentsync-bench --quality only: no speed measurements (run latentsync-bench --quick)"}
    update_benchmark_cache(path, entry)
    return entry


# ---------------------------------------------------------------- measuring


def _resolve(goal: str, clip: Path, audio: Optional[Path], weights: str, output: Path, ruleset, cache: Path,
             options: BenchmarkOptions):
    """The goal's JobSpec and the plan the rules resolve for it on this machine and clip."""
    from ..engine import gather_facts, resolve_plan
    from ..settings import RunSettings

    spec = JobSpec(video=clip, audio=audio, output=output, weights=weights, goal=goal, overwrite=True,
                   name=f"bench-quality-{goal}")
    plan = resolve_plan(spec, gather_facts(spec, ruleset, benchmark_cache=cache), ruleset)
    if options.reduced:  # smoke runs only (--tiny, --max-steps): the numbers stop meaning anything
        settings = _shrink(dict(plan.settings), options)
        plan = replace(plan, settings=RunSettings.from_mapping(settings, where=f"benchmark quality {goal}"))
    return spec, plan


def _run_goal(spec: JobSpec, plan, scorer, audio: Optional[Path], stride: int, progress: _Progress):
    """Run the goal's plan on the clip (the user's run path) and score its output: (GoalQuality, SyncScore)."""
    from ..output_safety import check_outputs
    from ..quality.report import summary
    from ..runner import execute_plan

    check_outputs(spec)  # never an input, whatever --outputs names
    _stage(progress, f"run {spec.goal}")
    report = execute_plan(spec, plan)
    progress.tick()
    _check_faces(spec, report)
    load = report.timings.get("load_models", 0.0)
    seconds = max(0.0, report.seconds_total - load)
    video_seconds = float(report.video_seconds) or 1e-9
    gpu = report.timings.get("gpu")
    missing = len(report.frames_without_face)
    _stage(progress, f"sync {spec.goal}")
    try:
        score = scorer.score_video(spec.output, audio, stride=stride)
    except LatentSyncError as error:
        raise MediaError(f"cannot score the lip sync of goal {spec.goal}'s output: {error.message}", path=spec.video,
                         hint="the clip needs a face in at least 16 consecutive frames") from error
    progress.tick()
    return GoalQuality(
        goal=spec.goal, plan=describe(dict(report.settings_applied)), settings=dict(report.settings_applied),
        fired_rules=list(plan.fired_rules), video_seconds=report.video_seconds, seconds=seconds,
        seconds_per_video_second=seconds / video_seconds,
        gpu_seconds_per_video_second=None if gpu is None else gpu / video_seconds,
        peak_vram_gib=report.peak_vram_gib, frames=report.frames_total, frames_without_face=missing,
        fallbacks_applied=[step["rule"] for step in report.fallbacks_applied], sync=summary(score),
    ), score


def _stage(progress: _Progress, name: str) -> None:
    """Say what runs now (the bar's label), before the unit it ticks when done."""
    progress.stage = name
    if progress.callback is not None:
        progress.callback(name, progress.done, progress.total)


def _check_faces(spec: JobSpec, report) -> None:
    if report.frames_total and len(report.frames_without_face) >= report.frames_total:
        raise MediaError("no face detected in any frame of the clip", path=spec.video,
                         hint="the clip needs a visible face (the face backend is the plan's `face_backend`)")


def _warm_up(spec: JobSpec, plan, options: BenchmarkOptions) -> None:
    """One untimed run of the reference plan with fewer steps (CUDA context, cuDNN autotuning,
    the face backend's models), so the first timed goal does not pay for them."""
    from ..runner import execute_plan, report_path_for

    steps = min(plan.settings.steps, max(1, options.warmup_steps))
    warm = replace(spec, output=spec.output.with_name(f"{spec.output.stem}.warm-up.mp4"), name="bench-quality-warm-up")
    report = execute_plan(warm, replace(plan, settings=plan.settings.replace(steps=steps)))
    for made in (warm.output, report_path_for(warm)):  # nothing of the warm-up stays in --outputs
        made.unlink(missing_ok=True)
    _check_faces(spec, report)


def _finite(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def run_quality_benchmark(clip: str | Path, *, audio: str | Path | None = None, weights: Optional[str] = None,
                          cache_path=None, progress: Optional[ProgressCallback] = None,
                          options: Optional[BenchmarkOptions] = None,
                          outputs: str | Path | None = None) -> QualityReport:
    """Run every goal on `clip` (driven by `audio`, default its own track) with `weights`, score the
    outputs, and write this card's benchmark entry's `quality` section. `outputs`: keep each goal's
    video there (default: a temporary folder, removed). progress(stage, done, total).
    Raises LatentSyncError (exit 2) for a bad clip, missing audio, no face or missing weights."""
    from ..engine import gather_facts, load_ruleset, resolve_plan
    from ..facts.model import weights_kind
    from ..pipeline.levers import resolve_device
    from ..quality.jobs import RANDOM_SCORER_STRIDE, sync_scorer
    from ..quality.psnr import lower_face_psnr
    from ..quality.report import sync_drop

    options = options or BenchmarkOptions()
    started = time.perf_counter()
    clip_path, audio_path, scorer_weights = check_quality_inputs(clip, audio, weights)
    weights = str(weights)
    path, notes = open_cache_path(cache_path)
    gpu = probe_gpu()
    if gpu.device != "cuda":
        notes.append("no CUDA GPU: measured on the CPU; the rules ignore CPU entries, so auto does not use these")
    random = scorer_weights in ("random", "random-small")
    if random:
        notes.append(f"RANDOM weights ({weights}): the run and the scores are real code, the numbers mean nothing")
    if options.reduced:
        notes.append(f"SMOKE RUN (max_steps={options.max_steps}, chunk_frames={options.chunk_frames}): "
                     "not representative")
    stride = RANDOM_SCORER_STRIDE if random else 1
    ruleset = load_ruleset(options.rules)
    tracker = _Progress(progress, (1 if options.warmup else 0) + 2 * len(QUALITY_GOALS) + 1)

    results: list[GoalQuality] = []
    scores: dict[str, Any] = {}  # goal -> SyncScore
    device = "cpu"
    with tempfile.TemporaryDirectory(prefix="latentsync-bench-quality-") as scratch:
        folder = Path(outputs).expanduser() if outputs is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        plans = {goal: _resolve(goal, clip_path, audio_path, weights, folder / f"{clip_path.stem}.{goal}.mp4",
                                ruleset, path, options) for goal in QUALITY_GOALS}
        device = str(resolve_device(plans[REFERENCE_GOAL][1].settings)[0])
        if options.warmup:
            _stage(tracker, "warm-up")
            _warm_up(*plans[REFERENCE_GOAL], options)
            tracker.tick()
        scorer = sync_scorer(scorer_weights, device)
        for goal in QUALITY_GOALS:
            spec, plan = plans[goal]
            logger.info("goal {}: {}", goal, describe(dict(plan.settings)))
            result, scores[goal] = _run_goal(spec, plan, scorer, audio_path, stride, tracker)
            results.append(result)
        _stage(tracker, "compare (PSNR)")
        reference = next(result for result in results if result.goal == REFERENCE_GOAL)
        reference_out = plans[REFERENCE_GOAL][0].output
        for result in results:
            result.sync_drop = sync_drop(scores[REFERENCE_GOAL], scores[result.goal], DROP_METRIC)
            result.sync_drop_probability = sync_drop(scores[REFERENCE_GOAL], scores[result.goal], "sync_probability")
            if result.goal != REFERENCE_GOAL:
                result.psnr_vs_quality = _finite(lower_face_psnr(reference_out, plans[result.goal][0].output))
            if outputs is not None:
                result.output = str(plans[result.goal][0].output)
        tracker.tick()

    section = {result.goal: result.cache_item() for result in results}
    model_version = plans[REFERENCE_GOAL][1].facts.get("model_version")
    run = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clip": clip_path.name, "clip_seconds": round(reference.video_seconds, 4),
        "audio": audio_path.name if audio_path is not None else None,
        "weights": weights, "weights_kind": weights_kind(weights), "model_version": model_version,
        "scorer": str(getattr(scorer, "name", scorer_weights)), "scorer_stride": stride, "metric": DROP_METRIC,
        "device": device, "smoke_run": options.reduced,
    }
    entry = write_quality_section(path, gpu, section, run)
    logger.info("wrote the quality section of {}'s benchmark entry to {}", gpu.name, path)

    auto = _auto_after(clip_path, audio_path, weights, ruleset, path, gather_facts, resolve_plan)
    bench = read_benchmark_cache(path, gpu)
    if gpu.device == "cuda" and not bench.available:
        notes.append(f"the rules do not use this entry: {bench.reason}")
    report = QualityReport(
        clip=str(clip_path), audio=None if audio_path is None else str(audio_path),
        clip_seconds=reference.video_seconds, weights=weights, weights_kind=weights_kind(weights),
        random_weights=random, gpu=gpu.to_dict(), device=device, scorer=run["scorer"], scorer_stride=stride,
        goals=results, entry=entry, cache_path=path, auto=auto, notes=notes,
        seconds=time.perf_counter() - started, options=asdict(options) | {"rules": str(options.rules or "")},
    )
    report.text = format_quality_report(report)
    report.summary = report.text
    return report


def _auto_after(clip: Path, audio: Optional[Path], weights: str, ruleset, cache: Path, gather_facts,
                resolve_plan) -> Optional[dict[str, Any]]:
    """What goal auto now resolves for this clip, and the measured facts it read."""
    spec = JobSpec(video=clip, audio=audio, output=clip.with_suffix(".auto.mp4"), weights=weights, goal="auto")
    try:
        plan = resolve_plan(spec, gather_facts(spec, ruleset, benchmark_cache=cache), ruleset)
    except LatentSyncError as error:  # a report line, never a failure of the measurement
        logger.warning("could not resolve auto for {} after the measurement: {}", clip, error)
        return None
    facts = {name: plan.facts[name] for name in ("sync_drop_preview", "sync_drop_balanced") if name in plan.facts}
    return {"goal": plan.goal, "goal_auto": plan.facts.get("goal_auto"), "facts": facts,
            "rules": [rule for rule in plan.fired_rules if rule.startswith("goal.auto")]}


# ---------------------------------------------------------------- the table


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def quality_table(goals: list[GoalQuality]) -> str:
    """goal, plan, s/video-s, sync probability, confidence, drop, PSNR: one line per goal."""
    header = ("goal", "plan", "s/video-s", "gpu s/video-s", "sync p", "confidence", "offset", "drop", "PSNR dB")
    lines = [header]
    for result in goals:
        reference = result.goal == REFERENCE_GOAL
        lines.append((
            result.goal, result.plan, _cell(result.seconds_per_video_second, ".2f"),
            _cell(result.gpu_seconds_per_video_second, ".2f"),
            _cell(result.sync["sync_probability"], ".3f"), _cell(result.sync["confidence"], ".4f"),
            _cell(result.sync["best_offset"], "+d"),
            "(ref)" if reference else _cell(result.sync_drop, "+.4f"),
            "(ref)" if reference else ("identical" if result.psnr_vs_quality is None else
                                       _cell(result.psnr_vs_quality, ".2f")),
        ))
    widths = [max(len(str(line[column])) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) if column < 2 else str(cell).rjust(width)
                               for column, (cell, width) in enumerate(zip(line, widths))) for line in lines)


def format_quality_report(report: QualityReport) -> str:
    audio = Path(report.audio).name if report.audio else "its own audio track"
    lines = [
        f"latentsync-bench --quality {Path(report.clip).name} ({report.clip_seconds:.2f} s, driven by {audio})",
        f"weights {report.weights} ({report.weights_kind}), device {report.device}, "
        f"scorer {report.scorer} ("
        + ("every window" if report.scorer_stride == 1 else f"every {report.scorer_stride}th window") + ")",
    ]
    if report.random_weights:
        lines.append("WARNING: random weights: these numbers are meaningless")
    lines += ["", quality_table(report.goals), "",
              "s/video-s: wall seconds of the goal's run (model loading excluded) per second of the clip; "
              "sync p / confidence: StableSyncNet on the output against the audio; "
              f"drop: the {REFERENCE_GOAL} goal's confidence minus this goal's (positive: worse); "
              f"PSNR: lower face against the {REFERENCE_GOAL} goal's output.",
              f"wrote the `quality` section of {report.gpu.get('name')}'s entry in {report.cache_path}"]
    if report.auto is not None:
        facts = ", ".join(f"{name} {value:g}" for name, value in report.auto["facts"].items())
        if facts:
            lines.append(f"auto on this clip now: goal {report.auto['goal']} (auto's choice "
                         f"{report.auto['goal_auto']}; measured {facts}; rules/v1/22_goal_sync.yaml)")
        else:
            lines.append(f"auto on this clip: goal {report.auto['goal']} (the rules do not read this entry's drops "
                         "on this machine)")
    lines += [f"note: {note}" for note in report.notes]
    lines.append(f"took {report.seconds:.1f} s")
    return "\n".join(lines)
