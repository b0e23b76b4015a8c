"""`run_benchmark`: time the real GPU stages of the plans the rules pick here, write the cache.

For each distinct plan (see `cases`): the models at their real size (the user's
weights, else random weights of the official architecture; on a machine without
CUDA the small config, so the flow stays testable), one batch of
`frames_per_batch` frames through `FaceSynthesizer` (VAE encode, denoising loop,
VAE decode, exactly as the runner calls it) after a warm-up, repeated, median.
Out of memory steps down the plan's own fallback ladder; what still does not fit
is recorded, never raised. `--stress` then grows frames_per_batch chunk by chunk
until the device runs out, and records the largest batch that fitted.

The cache is written once, at the end, atomically: an interrupted or failed
benchmark leaves the previous cache as it was.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from loguru import logger

from ..atomic import atomic_write_json
from ..errors import InvalidInputError
from ..facts.benchmark import (QUALITY_SECTIONS, benchmark_key, default_benchmark_cache, read_benchmark_cache,
                               software_versions, update_benchmark_cache)
from ..facts.gpu import GpuFacts, probe_gpu
from ..jobs import ProgressCallback
from .cases import BenchCase, PlannedRun, group_cases, resolve_runs, signature
from .timing import free_device_memory, repeat_timed

MODES = ("quick", "full", "stress")
VIDEO_FPS = 25.0  # LatentSync's training frame rate: "per video second" means 25 frames
FAKE_SEED = 1247
BENCH_FRAME_SIZE = (1280, 720)  # width, height of the benchmark clip: the HD frames users most often bring


@dataclass
class BenchmarkOptions:
    """How hard to measure. The defaults are the real benchmark; `tiny()` is for CI smoke runs."""

    reps: int = 3
    warmup: int = 1
    warmup_steps: int = 4  # denoising steps of a warm-up call (enough for CFG and DeepCache shapes)
    max_steps: Optional[int] = None  # cap on steps (smoke runs only: the numbers stop meaning anything)
    chunk_frames: Optional[int] = None  # smaller chunks (smoke runs only)
    stress_max_chunks: int = 8  # --stress tries 1..N chunks per UNet batch
    resolution: str = "auto"  # "auto" (follow the weights), "256" or "512"
    frame_size: tuple[int, int] = BENCH_FRAME_SIZE  # width, height of the benchmark clip's frames
    rules: Optional[Path] = None

    @classmethod
    def tiny(cls) -> "BenchmarkOptions":
        return cls(reps=1, warmup=1, warmup_steps=1, max_steps=2, chunk_frames=2, stress_max_chunks=3,
                   frame_size=(192, 144))

    @property
    def reduced(self) -> bool:
        return self.max_steps is not None or self.chunk_frames is not None


@dataclass
class CaseResult:
    name: str
    labels: list[str]
    modes: list[str]
    settings: dict[str, Any]
    status: str  # "ok" | "oom" | "error"
    frames_per_batch: int
    seconds_per_batch: Optional[float] = None
    samples_s: list[float] = field(default_factory=list)
    warmup_s: list[float] = field(default_factory=list)
    seconds_per_video_second: Optional[float] = None
    vae_encode_s_per_chunk: Optional[float] = None
    vae_decode_s_per_chunk: Optional[float] = None
    denoise_s_per_chunk: Optional[float] = None  # batch time / chunks - VAE; includes host copies
    peak_vram_gib: Optional[float] = None
    unet_calls_per_batch: Optional[int] = None
    cached_calls_per_batch: Optional[int] = None
    fallbacks_applied: list[str] = field(default_factory=list)
    stage_timings: dict[str, float] = field(default_factory=dict)  # the pipeline's own, as in a job report
    error: Optional[str] = None


@dataclass
class StressStep:
    frames_per_batch: int
    fits: bool
    peak_vram_gib: Optional[float] = None
    seconds: Optional[float] = None
    error: Optional[str] = None


@dataclass
class SummaryRow:
    goal: str
    clip_s: float
    goal_effective: str
    settings: dict[str, Any]
    changed: dict[str, tuple[Any, Any]]  # setting -> (before the benchmark, after)
    seconds_per_video_second: Optional[float]
    benchmark_rules: list[str]


@dataclass
class BenchmarkReport:
    """What one benchmark run found. `text` is the full report, `summary` fits one screen."""

    mode: str
    gpu: dict[str, Any]
    device: str
    weights: str
    resolution: int
    precision: str
    cases: list[CaseResult]
    stress: list[StressStep]
    skipped: list[str]
    entry: Optional[dict[str, Any]]
    cache_path: Path
    summary_rows: list[SummaryRow]
    notes: list[str]
    seconds: float
    options: dict[str, Any]
    text: str = ""
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cache_path"] = str(self.cache_path)
        return data


class _Progress:
    def __init__(self, callback: Optional[ProgressCallback], total: int):
        self.callback, self.total, self.done, self.stage = callback, max(1, total), 0, "benchmark"

    def tick(self) -> None:
        self.done = min(self.total, self.done + 1)
        if self.callback is not None:
            self.callback(self.stage, self.done, self.total)

    def skip(self, units: int) -> None:
        for _ in range(units):
            self.tick()


# ---------------------------------------------------------------- the cache file


def cache_problem(path: Path) -> Optional[str]:
    """Why an existing cache file cannot be used (unreadable, not JSON, not our schema), or None."""
    from ..contracts import schema_errors

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"unreadable ({error})"
    problems = schema_errors(data, "benchmark_cache")
    return f"not a latentsync-runner benchmark cache ({problems[0]})" if problems else None


def open_cache_path(cache_path=None) -> tuple[Path, list[str]]:
    """The benchmark cache's path (default: the user's) and the report's notes about it: a cache
    that cannot be used is said once, ignored, and rebuilt by the write."""
    path = Path(cache_path).expanduser() if cache_path is not None else default_benchmark_cache()
    notes: list[str] = []
    problem = cache_problem(path)
    if problem:
        message = f"benchmark cache {path} is {problem}: ignored, it will be rebuilt"
        logger.warning(message)
        notes.append(message)
    return path, notes


def _same_card(key: dict[str, Any], gpu: GpuFacts) -> bool:
    if key.get("gpu_uuid") and gpu.uuid:
        return key["gpu_uuid"] == gpu.uuid
    return key.get("gpu_name") == gpu.name


def clear_cached_results(path: Optional[Path] = None, gpu: Optional[GpuFacts] = None) -> int:
    """Drop this card's entries (every entry when `gpu` is None); returns how many. Atomic."""
    path = Path(path) if path is not None else default_benchmark_cache()
    if not path.exists():
        return 0
    entries: list[dict[str, Any]] = []
    if cache_problem(path) is None:
        entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
    kept = [entry for entry in entries if gpu is not None and not _same_card(entry["key"], gpu)]
    atomic_write_json(path, {"schema_version": 1, "entries": kept})
    logger.info("cleared {} benchmark entr{} from {}", len(entries) - len(kept),
                "y" if len(entries) - len(kept) == 1 else "ies", path)
    return len(entries) - len(kept)


# ---------------------------------------------------------------- measuring


# The benchmark clip: a face at a known place in every frame (so face detection, which
# depends on the footage, not on the GPU, is the one stage it does not time), speech-free
# noise as audio, held in memory. Everything else runs exactly as for a user's clip.


def bench_clip(frames: int, *, width: int, height: int, resolution: int, seed: int = FAKE_SEED):
    """An in-memory clip of `frames` frames with the face's landmarks given (no detector)."""
    import numpy as np

    from ..faces.landmarks import FaceLandmarks
    from ..pipeline.clips import AUDIO_RATE, ArrayClipSource

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    # brows and nose of a frontal face filling about a third of the frame height
    cx, cy, half = width / 2, height / 2, min(width, height) / 6
    points = np.array([[cx - half, cy - 0.5 * half], [cx + half, cy - 0.5 * half], [cx, cy + 0.4 * half]])
    face = FaceLandmarks(points=points, confidence=1.0, backend="bench")
    audio = rng.standard_normal(int(round(frames / VIDEO_FPS * AUDIO_RATE))).astype(np.float32) * 0.1
    return ArrayClipSource(pixels, VIDEO_FPS, audio, landmarks=[face] * frames)


def _bench_plan(case: BenchCase, settings: dict[str, Any], fallbacks: list[dict[str, Any]]):
    """The case's RunPlan with these (shrunk, resolution-pinned) settings and ladder."""
    from ..settings import RunSettings

    return replace(case.plan, settings=RunSettings.from_mapping(settings, where=f"benchmark case {case.name}"),
                   fallbacks=list(fallbacks))


def run_bench_clip(plan, weights: str, options: "BenchmarkOptions", *, frames: Optional[int] = None):
    """One clip through the user's run path (`latentsync.runner.run_clip`); returns its JobReport."""
    from ..pipeline.clips import ArrayFrameSink
    from ..runner import run_clip

    settings = plan.settings
    clip = bench_clip(frames or settings.frames_per_batch, width=options.frame_size[0],
                      height=options.frame_size[1], resolution=settings.resolution)
    return run_clip(clip, ArrayFrameSink(), plan, weights=weights,
                    job={"video": "<benchmark clip>", "output": "<memory>", "weights": weights})


_vae_timings: dict[tuple, tuple[float, float]] = {}


def _vae_seconds_per_chunk(weights: str, plan, device, dtype, options: "BenchmarkOptions") -> tuple[float, float]:
    """Median seconds of VAE encode (masked + reference) and decode for one chunk (a breakdown
    of the GPU stage for the report; the pipeline's own VAE calls); cached per option set."""
    from ..pipeline.vae import decode_latents, encode_images
    from ..runner import build_pipeline

    settings = plan.settings
    pipeline = build_pipeline(weights, settings)
    vae, vae_options = pipeline.models.vae, pipeline.vae_options
    frames, res = settings.chunk_frames, settings.resolution
    # masked faces, plus one reference per frame (upstream) or one per chunk
    encoded = frames + (1 if settings.reference_frames == "per_chunk" else frames)
    key = (id(vae), res, frames, encoded, vae_options.slicing, vae_options.tiling, vae_options.batch, str(dtype),
           settings.compile, settings.channels_last)
    if key not in _vae_timings:
        pixels = torch.rand(encoded, 3, res, res, device=device, dtype=dtype) * 2 - 1
        latents = encode_images(vae, pixels[:frames], vae_options)
        encode = repeat_timed(lambda: encode_images(vae, pixels, vae_options), device,
                              warmup=options.warmup, reps=options.reps)
        decode = repeat_timed(lambda: decode_latents(vae, latents, vae_options), device,
                              warmup=options.warmup, reps=options.reps)
        _vae_timings[key] = (encode.median_s, decode.median_s)
    return _vae_timings[key]


def time_plan(plan, weights: str, device, dtype, options: "BenchmarkOptions",
              tick: Callable[[], None]) -> tuple[dict[str, Any], Any]:
    """Time one batch of `frames_per_batch` frames through the user's pipeline with this plan.

    Warm-up calls run fewer denoising steps (same shapes); timed calls the plan's own.
    Returns (measurements, the last JobReport). Raises latentsync's OutOfMemoryError when
    the plan's out-of-memory ladder is exhausted.
    """
    warm = replace(plan, settings=plan.settings.replace(steps=min(plan.settings.steps, max(1, options.warmup_steps))))
    warmup_s, samples, gpu_s = [], [], []
    report = None
    for index in range(options.warmup + max(1, options.reps)):
        timed = index >= options.warmup
        report = run_bench_clip(plan if timed else warm, weights, options)
        wall = report.seconds_total - report.timings.get("load_models", 0.0)
        (samples if timed else warmup_s).append(wall)
        if timed:
            gpu_s.append(report.timings.get("gpu", 0.0))
        tick()
        if report.fallbacks_applied:  # the ladder stepped down: time the settings that fitted
            plan = replace(plan, settings=_typed(report.settings_applied), fallbacks=[])
            warm = replace(warm, settings=plan.settings.replace(steps=warm.settings.steps), fallbacks=[])
    settings = plan.settings
    gpu_median = sorted(gpu_s)[len(gpu_s) // 2]
    frames = settings.frames_per_batch
    chunks = settings.chunks_per_batch
    encode_s, decode_s = _vae_seconds_per_chunk(weights, plan, device, dtype, options)
    return {
        "seconds_per_batch": gpu_median, "samples_s": samples, "warmup_s": warmup_s,
        "seconds_per_video_second": gpu_median / (frames / VIDEO_FPS),
        "vae_encode_s_per_chunk": encode_s, "vae_decode_s_per_chunk": decode_s,
        "denoise_s_per_chunk": max(0.0, gpu_median / chunks - encode_s - decode_s),
        "peak_vram_gib": report.peak_vram_gib, "unet_calls_per_batch": report.stats["unet_calls"],
        "cached_calls_per_batch": report.stats["cached_calls"], "stage_timings": dict(report.timings),
    }, report


def _typed(values: dict[str, Any]):
    """Typed settings from a benchmark case's (complete) settings mapping."""
    from ..settings import RunSettings

    return RunSettings.from_mapping(values, where="benchmark case")


def _short_error(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def measure_case(case: BenchCase, weights: str, device, dtype, options: BenchmarkOptions,
                 progress: _Progress) -> CaseResult:
    """Time a case through the user's run path; its out-of-memory ladder is the plan's own
    (`run_clip` steps down), and a case that still does not fit is recorded, never raised."""
    from ..errors import OutOfMemoryError

    plan = _bench_plan(case, case.settings, case.fallbacks)
    progress.stage = case.name
    start_done = progress.done
    units = options.warmup + max(1, options.reps)
    try:
        measured, report = time_plan(plan, weights, device, dtype, options, progress.tick)
    except OutOfMemoryError as error:
        free_device_memory(device)
        progress.skip(max(0, units - (progress.done - start_done)))
        logger.warning("{}: out of memory even after its fallback steps; recorded as the limit", case.name)
        return CaseResult(name=case.name, labels=case.labels, modes=case.modes, settings=dict(case.settings),
                          status="oom", frames_per_batch=int(case.settings["frames_per_batch"]),
                          fallbacks_applied=[step["rule"] for step in case.fallbacks],
                          error=_short_error(error) + (f": {_short_error(error.__cause__)}" if error.__cause__ else ""))
    settings = dict(report.settings_applied)
    return CaseResult(name=case.name, labels=case.labels, modes=case.modes, settings=settings, status="ok",
                      frames_per_batch=int(settings["frames_per_batch"]),
                      fallbacks_applied=[step["rule"] for step in report.fallbacks_applied], **measured)


def stress_batches(case: BenchCase, settings: dict[str, Any], weights: str, device, options: BenchmarkOptions,
                   progress: _Progress) -> list[StressStep]:
    """Grow frames_per_batch one chunk at a time until the device runs out; one capped run each
    (no fallback ladder: running out is what this looks for)."""
    from ..errors import OutOfMemoryError

    chunk = int(settings["chunk_frames"])
    steps = max(options.warmup_steps, int(settings["deepcache_interval"]) + 1)
    found: list[StressStep] = []
    for chunks in range(1, options.stress_max_chunks + 1):
        trial = dict(settings, frames_per_batch=chunks * chunk, steps=min(int(settings["steps"]), steps))
        progress.stage = f"stress b{trial['frames_per_batch']}"
        failure: Optional[str] = None
        try:
            report = run_bench_clip(_bench_plan(case, trial, []), weights, options)
            found.append(StressStep(trial["frames_per_batch"], True, report.peak_vram_gib,
                                    report.timings.get("gpu")))
        except OutOfMemoryError as error:
            failure = _short_error(error)
        free_device_memory(device)
        progress.tick()
        if failure is not None:
            found.append(StressStep(trial["frames_per_batch"], False, error=failure))
            logger.info("stress: {} frames per batch ran out of memory; the limit is {}",
                        trial["frames_per_batch"], trial["frames_per_batch"] - chunk)
            progress.skip(options.stress_max_chunks - chunks)
            break
    return found


# ---------------------------------------------------------------- planning and summary


def _weights_and_resolution(weights: Optional[str], resolution: str, gpu: GpuFacts) -> tuple[str, Optional[int]]:
    """Which weights to time and the resolution override (None: follow the weights/rules)."""
    from ..weights import is_random, weights_version

    if resolution not in ("auto", "256", "512"):
        raise InvalidInputError(f"--resolution must be 256, 512 or auto, got {resolution!r}")
    if gpu.device != "cuda":
        if weights not in (None, "random-small"):
            logger.warning("no CUDA GPU: timing the small config (random-small) instead of {}", weights)
        return "random-small", None
    if weights is None:
        return ("random-1.5" if resolution == "256" else "random"), None
    if not is_random(str(weights)):
        from ..weights import check_weights_folder

        check_weights_folder(Path(weights))
    _, native = weights_version(str(weights))
    chosen = native if resolution == "auto" else int(resolution)
    return str(weights), chosen


def _shrink(settings: dict[str, Any], options: BenchmarkOptions) -> dict[str, Any]:
    """Apply the smoke-run knobs (steps cap, smaller chunks) to resolved settings."""
    settings = dict(settings)
    if options.max_steps is not None:
        settings["steps"] = min(int(settings["steps"]), options.max_steps)
    if options.chunk_frames is not None:
        chunks = max(1, int(settings["frames_per_batch"]) // int(settings["chunk_frames"]))
        settings["chunk_frames"] = options.chunk_frames
        settings["frames_per_batch"] = chunks * options.chunk_frames
    return settings


def summary_grid(ruleset, weights: str, *, free_vram_gib: Optional[float], cache: Path,
                 overrides: Optional[dict[str, Any]]) -> dict[tuple[str, float], Any]:
    """(goal, clip seconds) -> resolved RunPlan, for every goal and clip class."""
    from ..engine import gather_facts, resolve_plan
    from .cases import clip_seconds_by_class, planning_job

    plans = {}
    for goal in ("auto", "quality", "balanced", "preview"):
        for seconds in clip_seconds_by_class(ruleset).values():
            job = planning_job(weights, goal=goal, duration=seconds, free_vram_gib=free_vram_gib,
                               overrides=overrides)
            plans[(goal, seconds)] = resolve_plan(job, gather_facts(job, ruleset, benchmark_cache=cache), ruleset)
    return plans


def summary_rows(before: dict, after: dict, results: list[CaseResult], options: BenchmarkOptions) -> list[SummaryRow]:
    measured = {signature(r.settings): r.seconds_per_video_second for r in results if r.status == "ok"}
    rows = []
    for key, plan in after.items():
        old = before[key].settings
        changed = {name: (old[name], value) for name, value in plan.settings.items() if old[name] != value}
        bench_rules = sorted({source.rule for source in plan.sources.values() if source.rule.startswith("bench.")})
        rows.append(SummaryRow(goal=key[0], clip_s=key[1], goal_effective=plan.goal, settings=dict(plan.settings),
                               changed=changed, seconds_per_video_second=measured.get(
                                   signature(_shrink(plan.settings, options))), benchmark_rules=bench_rules))
    return rows


def build_entry(gpu: GpuFacts, results: list[CaseResult], stress: list[StressStep], *, resolution: int,
                precision: str, mode: str, options: BenchmarkOptions) -> Optional[dict[str, Any]]:
    """The cache entry (schemas/benchmark_cache.schema.json), or None when nothing ran."""
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        return None
    modes: dict[str, dict[str, Any]] = {}
    for result in ok:
        for mode_name in result.modes:
            item: dict[str, Any] = {"seconds_per_video_second": round(result.seconds_per_video_second, 4),
                                    "frames_per_batch": result.frames_per_batch}
            if result.peak_vram_gib is not None:
                item["peak_vram_gib"] = round(result.peak_vram_gib, 3)
            modes[mode_name] = item
    fitted = [step.frames_per_batch for step in stress if step.fits]
    ran = max(r.frames_per_batch for r in ok)
    peaks = [r.peak_vram_gib for r in ok if r.peak_vram_gib is not None] + \
            [s.peak_vram_gib for s in stress if s.fits and s.peak_vram_gib is not None]
    notes = [f"latentsync-bench --{mode}, {len(ok)} plan(s) timed, GPU stages only (VAE encode, denoise, VAE decode)"]
    if stress:
        limit_hit = any(not step.fits for step in stress)
        notes.append(f"stress: largest batch that fitted {max(fitted) if fitted else 'none'} frames"
                     + ("" if limit_hit else f" (search stopped at {options.stress_max_chunks} chunks, no limit hit)"))
    else:
        notes.append("max_frames_per_batch is the largest batch timed, not searched (run --stress to search)")
    if options.reduced:
        notes.append(f"SMOKE RUN (max_steps={options.max_steps}, chunk_frames={options.chunk_frames}): "
                     "not representative")
    entry: dict[str, Any] = {
        "key": benchmark_key(gpu),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "precision": precision,
        "modes": modes,
        "max_frames_per_batch": max(fitted) if fitted else ran,
        "peak_vram_gib": round(max(peaks), 3) if peaks else 0.0,
        "note": "; ".join(notes),
    }
    if resolution in (256, 512):  # the schema knows the model's two sizes; the small test config has none
        entry["resolution"] = resolution
    return entry


# ---------------------------------------------------------------- entry point


def run_benchmark(mode: str = "quick", *, clear: bool = False, cache_path=None, weights=None,
                  progress: Optional[ProgressCallback] = None,
                  options: Optional[BenchmarkOptions] = None) -> BenchmarkReport:
    """Measure this machine, write the benchmark cache, and return the report.

    mode: "quick" (the plans auto, each goal and the non-compiling speed modes pick
    here), "full" (also every preset x speed mode x DeepCache on/off, torch.compile
    included) or "stress" (quick, then the largest frames_per_batch that fits).
    clear: drop this card's cached results first. progress(stage, done, total).
    """
    from ..engine import load_ruleset
    from ..pipeline.levers import resolve_device
    from .report import format_report, format_summary

    if mode not in MODES:
        raise InvalidInputError(f"benchmark mode must be one of {', '.join(MODES)}, got {mode!r}")
    options = options or BenchmarkOptions()
    started = time.perf_counter()
    path, notes = open_cache_path(cache_path)

    gpu = probe_gpu()
    if gpu.device != "cuda":
        message = ("no CUDA GPU: benchmarking the CPU with the small config (random-small); these numbers say "
                   "nothing about a GPU and the rules ignore CPU entries")
        logger.warning(message)
        notes.append(message)
    if clear:
        removed = clear_cached_results(path, gpu)
        notes.append(f"--clear: dropped {removed} cached entr{'y' if removed == 1 else 'ies'} for {gpu.name}")
    weights_name, resolution_override = _weights_and_resolution(weights, options.resolution, gpu)
    overrides = {"resolution": resolution_override} if resolution_override else None
    ruleset = load_ruleset(options.rules)
    free_vram = gpu.vram_free_gib if gpu.device == "cuda" else None

    runs: list[PlannedRun] = resolve_runs(mode, ruleset, weights_name, free_vram_gib=free_vram,
                                          benchmark_cache=path, overrides=overrides)
    before = summary_grid(ruleset, weights_name, free_vram_gib=free_vram, cache=path, overrides=overrides)
    cases, skipped = group_cases(runs, include_compiled=(mode == "full"))
    for case in cases:
        case.settings = _shrink(case.settings, options)
    if skipped:
        notes.append("not timed in --{} (torch.compile takes minutes cold; use --full): {}".format(
            mode, ", ".join(run.label for run in skipped)))

    units = sum(options.warmup + max(1, options.reps) for _ in cases)
    if mode == "stress":
        units += options.stress_max_chunks
    tracker = _Progress(progress, units)
    results: list[CaseResult] = []
    device = dtype = None
    for case in cases:
        case.settings["resolution"] = int(resolution_override or case.settings["resolution"])
        device, dtype, _ = resolve_device(_typed(case.settings))
        logger.info("timing {} ({})", case.name, ", ".join(case.labels))
        results.append(measure_case(case, weights_name, device, dtype, options, tracker))

    stress: list[StressStep] = []
    if mode == "stress" and results:
        ok = [r for r in results if r.status == "ok"] or results
        heaviest = max(ok, key=lambda r: (r.peak_vram_gib or 0.0, r.settings["guidance_scale"] > 1.0))
        case = next(c for c in cases if c.name == heaviest.name)
        stress = stress_batches(case, heaviest.settings, weights_name, device, options, tracker)

    precision = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dtype), "fp32")
    resolution = int(cases[0].settings["resolution"]) if cases else 0
    entry = build_entry(gpu, results, stress, resolution=resolution, precision=precision, mode=mode,
                        options=options)
    free_device_memory(device or torch.device("cpu"))
    if entry is not None:
        update_benchmark_cache(path, entry, keep=QUALITY_SECTIONS)  # --quality's measurements stay
        logger.info("wrote benchmark results for {} to {}", gpu.name, path)
    else:
        notes.append(f"nothing fitted in memory: {path} was left as it was")
    # Resolve again now that the cache holds the measurements: what do they change?
    after = summary_grid(ruleset, weights_name, free_vram_gib=free_vram, cache=path, overrides=overrides)
    bench_facts = read_benchmark_cache(path, gpu)
    if not bench_facts.available:
        notes.append(f"the rules do not use this entry: {bench_facts.reason}")
    report = BenchmarkReport(
        mode=mode, gpu=gpu.to_dict(), device=str(device), weights=weights_name, resolution=resolution,
        precision=precision, cases=results, stress=stress, skipped=[run.label for run in skipped], entry=entry,
        cache_path=path, summary_rows=summary_rows(before, after, results, options), notes=notes,
        seconds=time.perf_counter() - started, options=asdict(options) | {"rules": str(options.rules or "")},
    )
    report.options["software"] = software_versions()
    report.text = format_report(report)
    report.summary = format_summary(report)
    return report
