"""Library calls for callers that hold frames in memory (ComfyUI nodes, notebooks).

    result = lipsync_arrays(frames, fps=25, audio=waveform, sample_rate=44100, goal="auto")
    result.frames      # (N, H, W, 3) uint8, N = upstream's frame count for the audio at `fps`
                       # (one frame per audio window: ceil(seconds x fps), up to 2 more)
    result.audio_16k   # the audio the frames were synced to, trimmed to N / fps seconds at most
    result.plan        # the explained RunPlan

The same rules, engine and pipeline as `run_job`; only the media live in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from .errors import InvalidInputError, MediaError
from .jobs import CancelCallback, JobSpec, ProgressCallback

AUDIO_RATE = 16000


@dataclass
class ArrayResult:
    frames: Any  # (N, H, W, 3) uint8
    audio_16k: Any  # float32 mono, at most N / fps seconds (the frames may run up to 2 past its end)
    fps: float
    plan: Any  # RunPlan
    report: dict[str, Any] = field(default_factory=dict)  # the job report, as `run_job` writes it (job_report schema)
    frames_without_face: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)  # UNet calls, cached calls, padded frames
    settings_applied: dict[str, Any] = field(default_factory=dict)  # after any out-of-memory fallbacks
    fallbacks_applied: list[dict] = field(default_factory=list)


def resample_audio(audio, sample_rate: int):
    """Any rate, mono or (channels, samples) / (samples, channels) -> 16 kHz mono float32.

    Uses FFmpeg's resampler through PyAV, the same one `load_audio` uses for files.
    """
    import av
    import numpy as np

    wave = np.asarray(audio, dtype=np.float32)
    if wave.ndim == 2:
        channel_axis = 0 if wave.shape[0] <= 8 and wave.shape[0] < wave.shape[1] else 1
        wave = wave.mean(axis=channel_axis)
    if wave.ndim != 1:
        raise MediaError(f"audio must be mono or (channels, samples), got shape {np.shape(audio)}")
    if int(sample_rate) <= 0:
        raise MediaError(f"sample rate must be positive, got {sample_rate!r}")
    if int(sample_rate) == AUDIO_RATE or wave.size == 0:
        return np.ascontiguousarray(wave)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, :]), format="flt", layout="mono")
    frame.sample_rate = int(sample_rate)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]  # flush
    out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return out[: int(round(wave.size * AUDIO_RATE / int(sample_rate)))].astype(np.float32)


def plan_for_arrays(
    *,
    n_frames: int,
    fps: float,
    audio_seconds: float,
    weights: str = "random-small",
    goal: str = "auto",
    quality_preset: Optional[str] = None,
    speed_mode: Optional[str] = None,
    overrides: Optional[dict] = None,
    assume: Optional[dict] = None,
    ruleset=None,
    benchmark_cache: Optional[Path] = None,
):
    """The explained run plan for an in-memory clip (no file to probe: its facts are pinned)."""
    from .engine import gather_facts, load_ruleset, resolve_plan

    assume = dict(assume or {})
    assume.setdefault("duration", audio_seconds)
    assume.setdefault("fps", fps)
    spec = JobSpec(
        video=Path("<memory>"), output=Path("<memory>"), weights=weights, goal=goal,
        quality_preset=quality_preset, speed_mode=speed_mode, overrides=dict(overrides or {}), assume=assume,
    )
    ruleset = ruleset if ruleset is not None else load_ruleset()
    facts = gather_facts(spec, ruleset, benchmark_cache=benchmark_cache)
    return spec, resolve_plan(spec, facts, ruleset)


def lipsync_arrays(
    frames,
    *,
    fps: float,
    audio,
    sample_rate: int,
    weights: str = "random-small",
    goal: str = "auto",
    quality_preset: Optional[str] = None,
    speed_mode: Optional[str] = None,
    overrides: Optional[dict] = None,
    seed: Optional[int] = None,
    plan=None,
    ruleset=None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCallback] = None,
) -> ArrayResult:
    """Lip-sync frames held in memory to `audio`. `plan` (a RunPlan) skips resolving one.

    Runs the same path as `run_job` (`latentsync.runner.run_clip`: the pipeline, the
    out-of-memory ladder, the job report), with the media in memory.
    """
    import numpy as np

    from .pipeline.clips import ArrayClipSource, ArrayFrameSink
    from .runner import run_clip

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise InvalidInputError(f"frames must be (N, H, W, 3) with N >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if not fps or fps <= 0:
        raise InvalidInputError(f"fps must be positive, got {fps!r}", hint="take it from the source video")
    wave = resample_audio(audio, sample_rate)
    if wave.size == 0:
        raise MediaError("the audio holds no samples")
    if plan is None:
        _, plan = plan_for_arrays(
            n_frames=len(frames), fps=fps, audio_seconds=wave.size / AUDIO_RATE, weights=weights, goal=goal,
            quality_preset=quality_preset, speed_mode=speed_mode, overrides=overrides, ruleset=ruleset,
        )
    elif seed is not None and seed != plan.settings.seed:
        plan = replace(plan, settings=plan.settings.replace(seed=int(seed)))
    job = JobSpec(video=Path("<memory>"), output=Path("<memory>"), weights=weights, goal=goal,
                  quality_preset=quality_preset, speed_mode=speed_mode, overrides=dict(overrides or {}), seed=seed)
    sink = ArrayFrameSink()
    report = run_clip(ArrayClipSource(frames, float(fps), wave), sink, plan, weights=weights, job=job.to_dict(),
                      progress=progress, cancel=cancel)
    out = sink.frames(like=frames)
    audio_out = wave[: int(round(len(out) / fps * AUDIO_RATE))]
    return ArrayResult(
        frames=out, audio_16k=audio_out, fps=float(fps), plan=plan, report=report.to_dict(),
        frames_without_face=report.frames_without_face, warnings=report.warnings, timings=report.timings,
        stats=report.stats, settings_applied=report.settings_applied, fallbacks_applied=report.fallbacks_applied,
    )
