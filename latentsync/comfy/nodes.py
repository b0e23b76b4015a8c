"""The three ComfyUI nodes: LatentSync, LatentSync Auto-Optimize, LatentSync GPU Benchmark.

Each is a thin adapter over `latentsync.api` (the same rules, engine and pipeline as
`latentsync-run`). Importing this module is cheap: torch, the pipeline and the rules
engine are imported inside the node functions. The only import-time action is
registering `models/latentsync` in ComfyUI's own model-folder registry, and only
when ComfyUI's `folder_paths` is there.

A RUN_PLAN travels between nodes as a plain dict (`run_plan_payload`): the resolved
plan (`RunPlan.to_dict()`), the weights it was planned for and the node that made it.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from loguru import logger

from ..atomic import atomic_write_text
from . import host
from .convert import audio_seconds, audio_to_wave, frames_to_image, image_to_frames, trimmed_audio

RUN_PLAN = "LATENTSYNC_RUN_PLAN"  # namespaced: another pack's "RUN_PLAN" must not plug in here
PAYLOAD_FORMAT = "latentsync-run-plan/1"
CATEGORY = "LatentSync"

GOALS = ("auto", "preview", "balanced", "quality")
QUALITY_PRESETS = ("auto", "draft", "fast", "balanced", "quality", "ultra")
SPEED_MODES = ("auto", "normal", "fast", "turbo", "ultra")
DEEPCACHE_CHOICES = ("auto", "on", "off")
BENCHMARK_MODES = ("quick", "full", "stress")
SEED_MAX = 0xFFFFFFFFFFFFFFFF

WEIGHTS_TOOLTIP = ("random-small / random: RANDOM weights (not lip-synced; for trying the graph). "
                   "Other entries: folders under ComfyUI/models/latentsync/ holding latentsync_unet.pt, "
                   "whisper/tiny.pt and vae/.")
WEIGHTS_PATH_TOOLTIP = "Optional: a weights folder anywhere on disk (official layout); wins over `weights`."


def _weights_inputs() -> dict[str, Any]:
    return {
        "weights": (host.weights_choices(), {"default": "random-small", "tooltip": WEIGHTS_TOOLTIP}),
        "weights_path": ("STRING", {"default": "", "tooltip": WEIGHTS_PATH_TOOLTIP}),
    }


def _choice(value: str) -> Optional[str]:
    return None if value in (None, "", "auto") else value


def node_overrides(enable_deepcache: str, inference_steps: int, lips_expression: float, seed: int) -> dict[str, Any]:
    """The LatentSync node's explicit settings (0 / auto / -1 = the rules decide)."""
    overrides: dict[str, Any] = {}
    if enable_deepcache == "on":
        overrides["deepcache"] = True
    elif enable_deepcache == "off":
        overrides["deepcache"] = False
    elif enable_deepcache != "auto":
        from ..errors import InvalidInputError

        raise InvalidInputError(f"enable_deepcache: {enable_deepcache!r} is not one of auto, on, off")
    if int(inference_steps) > 0:
        overrides["steps"] = int(inference_steps)
    if float(lips_expression) > 0:
        overrides["guidance_scale"] = float(lips_expression)
    if int(seed) >= 0:
        overrides["seed"] = int(seed)
    return overrides


def run_plan_payload(plan: Any, weights: str, origin: str) -> dict[str, Any]:
    return {"format": PAYLOAD_FORMAT, "plan": plan.to_dict(), "weights": weights, "origin": origin}


def plan_from_payload(payload: Any, weights: str, overrides: dict[str, Any]):
    """The RunPlan a connected RUN_PLAN carries, with the node's explicit settings on top
    (the user wins, as with a plan's `overrides:`). Validated against the run-plan schema."""
    from ..engine import USER_OVERRIDE, RunPlan
    from ..errors import InvalidInputError
    from ..facts.model import weights_kind
    from ..weights import detect_model_version

    if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_FORMAT or "plan" not in payload:
        raise InvalidInputError("run_plan: not a LatentSync run plan",
                                hint="connect the run_plan output of LatentSync Auto-Optimize or GPU Benchmark")
    data = copy.deepcopy(payload["plan"])
    facts = data.get("facts") or {}
    planned_for = (facts.get("weights"), facts.get("model_version"))
    running = (weights_kind(weights), detect_model_version(weights))
    if planned_for[0] is not None and planned_for != running:
        raise InvalidInputError(
            f"run_plan: planned for {planned_for[0]} weights, model {planned_for[1]} ({payload.get('weights')}), "
            f"but this node runs {running[0]} weights, model {running[1]} ({weights})",
            hint="pick the same weights on the node that made the run plan (face resolution follows the model)",
        )
    for key, value in overrides.items():
        settings, sources = data.get("settings", {}), data.get("sources", {})
        was = settings.get(key)
        settings[key] = value
        sources[key] = {"rule": USER_OVERRIDE, "file": None, "line": None, "override": True,
                        "description": f"set on the LatentSync node (the run plan said {was!r})"}
        for step in data.get("fallbacks", []):
            step.get("set", {}).pop(key, None)  # the out-of-memory ladder never undoes the user's choice
    data["fallbacks"] = [step for step in data.get("fallbacks", []) if step.get("set")]
    return RunPlan.from_dict(data)


def _no_benchmark_path(scratch: str) -> Path:
    """A cache path that cannot exist: plans from the rules' estimates, ignoring any cached benchmark."""
    return Path(scratch) / "no-benchmark.json"


def run_gpu_benchmark(mode: str, *, clear: bool, progress=None) -> tuple[str, Optional[str], bool]:
    """(report text, cache path or None, ran) from `latentsync.bench.run_benchmark`, or a message
    saying why it could not run (the benchmark module is not installed in this checkout)."""
    try:
        from ..bench import run_benchmark
    except ImportError as error:
        return (f"LatentSync GPU Benchmark is not available in this installation ({error}); "
                "update the node pack (git pull) or run `latentsync-bench` from a terminal."), None, False
    report = run_benchmark(mode, clear=clear, progress=progress)
    cache = getattr(report, "cache_path", None)
    return str(getattr(report, "text", report)), (str(cache) if cache else None), True


def _rules_fingerprint() -> str:
    """Changes when a rule file changes, so ComfyUI re-plans instead of reusing a cached plan."""
    from ..paths import default_rules_dir

    folder = default_rules_dir()
    try:
        stamps = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.yaml"))
    except OSError:
        return "unreadable"
    return repr((str(folder), stamps))


# The LatentSync node's `plan` output ends with the job report after this line, as JSON.
JOB_REPORT_HEADER = "job report (as latentsync-run writes it):"


class LatentSync:
    """Lip-sync video frames to speech with LatentSync; the rules (or a connected run plan) pick the settings."""

    RETURN_TYPES = ("IMAGE", "AUDIO", "STRING")
    RETURN_NAMES = ("images", "audio", "plan")
    OUTPUT_TOOLTIPS = (
        "the lip-synced frames (as many as the audio covers at fps)",
        "the input audio, trimmed to the returned frames",
        "the explained run plan: every setting, its value and the rule (file:line) behind it",
    )
    FUNCTION = "lipsync"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "the video frames"}),
                "audio": ("AUDIO", {"tooltip": "the speech to sync the lips to"}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001, "forceInput": True,
                                  "tooltip": "the source video's frame rate (connect it from the video loader; "
                                             "the frames are never resampled to 25 fps)"}),
                "quality_preset": (list(QUALITY_PRESETS), {"default": "auto",
                                   "tooltip": "auto: the rules pick from clip length and GPU"}),
                "speed_mode": (list(SPEED_MODES), {"default": "auto"}),
                "enable_deepcache": (list(DEEPCACHE_CHOICES), {"default": "auto",
                                     "tooltip": "DeepCache feature reuse in the UNet (auto: the rules decide)"}),
                "inference_steps": ("INT", {"default": 0, "min": 0, "max": 100,
                                    "tooltip": "denoising steps; 0: the rules decide"}),
                "lips_expression": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 5.0, "step": 0.05,
                                    "tooltip": "guidance scale (1.0-5.0; higher = stronger mouth movement); "
                                               "0: the rules decide"}),
                "seed": ("INT", {"default": -1, "min": -1, "max": SEED_MAX,
                         "tooltip": "-1: the rules' seed (upstream default)"}),
                **_weights_inputs(),
            },
            "optional": {
                "run_plan": (RUN_PLAN, {"tooltip": "from LatentSync Auto-Optimize / GPU Benchmark: its settings run "
                                                   "(quality_preset and speed_mode here are then not used)"}),
            },
        }

    def lipsync(self, images, audio, fps, quality_preset="auto", speed_mode="auto", enable_deepcache="auto",
                inference_steps=0, lips_expression=0.0, seed=-1, weights="random-small", weights_path="",
                run_plan=None):
        from ..api import lipsync_arrays
        from ..errors import InvalidInputError, OutOfMemoryError
        from ..facts.timing import mark_resident
        from ..runner import JobCancelled

        mark_resident()  # a ComfyUI session keeps the models between runs (only this package's flag)
        started = time.perf_counter()
        weights_value = host.resolve_weights(weights, weights_path)
        if fps is None or float(fps) <= 0:
            raise InvalidInputError(f"fps: must be the source's frame rate (> 0), got {fps!r}",
                                    hint="connect the fps output of the video loader")
        frames = image_to_frames(images)
        wave, sample_rate = audio_to_wave(audio)
        overrides = node_overrides(enable_deepcache, inference_steps, lips_expression, seed)
        plan = plan_from_payload(run_plan, weights_value, overrides) if run_plan is not None else None
        progress = host.ComfyProgress()
        try:
            result = lipsync_arrays(
                frames, fps=float(fps), audio=wave, sample_rate=sample_rate, weights=weights_value, goal="auto",
                quality_preset=_choice(quality_preset), speed_mode=_choice(speed_mode), overrides=overrides,
                seed=overrides.get("seed"), plan=plan, progress=progress, cancel=host.interrupt_requested,
            )
        except JobCancelled:
            host.raise_interrupt()  # ComfyUI's own "interrupted", not an error
            raise
        except Exception as error:
            import torch

            if isinstance(error, torch.OutOfMemoryError):
                raise OutOfMemoryError(
                    "out of GPU memory while lip-syncing",
                    hint="connect LatentSync Auto-Optimize (it plans batches for the free VRAM), pick "
                         "quality_preset draft/fast, or free VRAM (unload other models)",
                ) from error
            raise
        seconds = time.perf_counter() - started
        summary = self._summary(result, plan is not None, run_plan, quality_preset, speed_mode, weights_value, seconds)
        logger.info("LatentSync node: {} frames in {:.1f} s", len(result.frames), seconds)
        return (
            frames_to_image(result.frames),
            trimmed_audio(wave, sample_rate, len(result.frames) / float(fps)),
            summary,
        )

    @staticmethod
    def _summary(result, from_plan, payload, quality_preset, speed_mode, weights, seconds) -> str:
        lines = [f"LatentSync: {len(result.frames)} frames at {result.fps:g} fps, weights {weights}, {seconds:.1f} s"]
        if from_plan:
            lines.append(f"settings: from the connected run plan ({payload.get('origin', 'run plan')}); "
                         "quality_preset and speed_mode on this node were not used")
        else:
            lines.append(f"settings: from the rules (quality_preset {quality_preset}, speed_mode {speed_mode})")
        lines.append(result.plan.explain_table())
        if result.warnings:
            lines.append("")
            lines.extend(f"warning: {warning}" for warning in result.warnings)
        if result.timings:
            lines.append("")
            lines.append("timings: " + ", ".join(f"{stage} {value:.2f} s" for stage, value in result.timings.items()))
        # The same job report latentsync-run writes beside its output (schemas/job_report.schema.json).
        lines.append("")
        lines.append(JOB_REPORT_HEADER)
        lines.append(json.dumps(result.report, indent=2, default=str))
        return "\n".join(lines)


class LatentSyncAutoOptimize:
    """Plan the best settings for this GPU and clip (the same rules as latentsync-run), optionally
    measuring the GPU first. Connect its run_plan to the LatentSync node: those settings run."""

    RETURN_TYPES = (RUN_PLAN, "STRING")
    RETURN_NAMES = ("run_plan", "info")
    OUTPUT_TOOLTIPS = ("the resolved run plan (connect to LatentSync)", "what was planned, and why")
    FUNCTION = "optimize"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "goal": (list(GOALS), {"default": "auto",
                         "tooltip": "preview: fast; quality: upstream settings; balanced: in between; "
                                    "auto: the rules pick from clip length and GPU"}),
                "clip_seconds": ("FLOAT", {"default": 10.0, "min": 0.04, "max": 36000.0, "step": 0.1,
                                 "tooltip": "clip length, used when neither audio nor images are connected"}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001,
                        "tooltip": "the source's frame rate (with images: length = frames / fps)"}),
                "run_benchmark": ("BOOLEAN", {"default": False,
                                  "tooltip": "measure this GPU (quick benchmark) before planning"}),
                "use_cached": ("BOOLEAN", {"default": True,
                               "tooltip": "use a fresh cached benchmark of this GPU instead of measuring again"}),
                **_weights_inputs(),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "the frames to be lip-synced (their count sets the clip length)"}),
                "audio": ("AUDIO", {"tooltip": "the speech (its length sets the clip length)"}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # ComfyUI re-runs a node when its inputs change; also re-plan when a rule file changes.
        return _rules_fingerprint()

    def optimize(self, goal="auto", clip_seconds=10.0, fps=25.0, run_benchmark=False, use_cached=True,
                 weights="random-small", weights_path="", images=None, audio=None):
        from ..api import plan_for_arrays
        from ..errors import InvalidInputError, LatentSyncError
        from ..video.schedule import output_frame_count

        weights_value = host.resolve_weights(weights, weights_path)
        if fps is None or float(fps) <= 0:
            raise InvalidInputError(f"fps: must be positive, got {fps!r}")
        fps = float(fps)
        if audio is not None:
            seconds, length_from = audio_seconds(audio), "the connected audio"
        elif images is not None:
            seconds, length_from = len(images) / fps, f"{len(images)} connected frames at {fps:g} fps"
        else:
            seconds, length_from = float(clip_seconds), "clip_seconds"
        if seconds <= 0:
            raise InvalidInputError(f"clip length must be positive, got {seconds:g} s from {length_from}")
        # The LatentSync node outputs upstream's frame count for the audio (one frame per audio
        # window, up to 2 more than ceil(seconds x fps); looping or cutting the source), so with
        # audio connected that is the clip's frame count, not len(images).
        n_frames = (output_frame_count(int(round(seconds * 16000)), fps) if audio is not None or images is None
                    else len(images))

        info: list[str] = [f"clip: {seconds:.2f} s ({length_from}), {n_frames} output frames at {fps:g} fps"]
        with tempfile.TemporaryDirectory(prefix="latentsync-plan-") as scratch:
            cache: Optional[Path] = None if use_cached else _no_benchmark_path(scratch)
            plan_args = dict(n_frames=n_frames, fps=fps, audio_seconds=seconds, weights=weights_value, goal=goal)
            _, plan = plan_for_arrays(**plan_args, benchmark_cache=cache)
            fresh = bool(plan.facts.get("bench_available"))
            if run_benchmark and not (use_cached and fresh):
                try:
                    text, cache_path, ran = run_gpu_benchmark("quick", clear=False, progress=host.ComfyProgress())
                except LatentSyncError as error:
                    text, cache_path, ran = f"benchmark failed: {error}", None, False
                info.append(f"benchmark (quick): {text.strip().splitlines()[0] if text.strip() else 'done'}")
                if ran:
                    _, plan = plan_for_arrays(**plan_args,
                                              benchmark_cache=Path(cache_path) if cache_path else None)
            elif run_benchmark:
                info.append("benchmark: a fresh cached result of this GPU was used (use_cached)")
        if plan.facts.get("bench_available"):
            info.append(f"benchmark facts: used (largest batch that fitted: "
                        f"{plan.facts.get('bench_max_frames_per_batch')} frames)")
        elif plan.facts.get("device") == "cuda":
            info.append("benchmark facts: none (planned from the rules' estimates; run_benchmark measures this GPU)")
        info.append(f"goal: {goal} -> {plan.goal}")
        info.append(plan.explain_table())
        return run_plan_payload(plan, weights_value, "LatentSync Auto-Optimize"), "\n".join(info)


class LatentSyncGPUBenchmark:
    """Measure this GPU with latentsync-bench (speed per mode, largest batch that fits); the result is
    cached for the rules. Also outputs a run plan that uses the measurement."""

    RETURN_TYPES = ("STRING", RUN_PLAN)
    RETURN_NAMES = ("report", "run_plan")
    OUTPUT_TOOLTIPS = ("the benchmark report", "a run plan for clip_seconds of video using the measurement")
    FUNCTION = "benchmark"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__
    OUTPUT_NODE = True  # runs on its own (saves the report) with nothing connected

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (list(BENCHMARK_MODES), {"default": "quick",
                         "tooltip": "quick: a minute; full: every speed mode; stress: the largest batch that fits"}),
                "clear_cache": ("BOOLEAN", {"default": False, "tooltip": "forget earlier measurements first"}),
                "save_report": ("BOOLEAN", {"default": True,
                                "tooltip": "also write the report to ComfyUI/output/latentsync/"}),
                "goal": (list(GOALS), {"default": "auto", "tooltip": "goal of the run plan output"}),
                "clip_seconds": ("FLOAT", {"default": 10.0, "min": 0.04, "max": 36000.0, "step": 0.1,
                                 "tooltip": "clip length the run plan output is made for"}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001}),
                **_weights_inputs(),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # a measurement is never reused from ComfyUI's cache

    def benchmark(self, mode="quick", clear_cache=False, save_report=True, goal="auto", clip_seconds=10.0,
                  fps=25.0, weights="random-small", weights_path=""):
        from ..api import plan_for_arrays
        from ..errors import InvalidInputError

        if mode not in BENCHMARK_MODES:
            raise InvalidInputError(f"mode: {mode!r} is not one of {', '.join(BENCHMARK_MODES)}")
        weights_value = host.resolve_weights(weights, weights_path)
        text, cache_path, ran = run_gpu_benchmark(mode, clear=bool(clear_cache), progress=host.ComfyProgress())
        lines = [text.rstrip()]
        if save_report and ran:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            target = host.output_directory() / "latentsync" / f"benchmark-{mode}-{stamp}.txt"
            atomic_write_text(target, text if text.endswith("\n") else text + "\n")
            lines.append(f"report saved to {target}")
        _, plan = plan_for_arrays(n_frames=max(1, round(float(clip_seconds) * float(fps))), fps=float(fps),
                                  audio_seconds=float(clip_seconds), weights=weights_value, goal=goal,
                                  benchmark_cache=Path(cache_path) if cache_path else None)
        lines.append("")
        lines.append(f"run plan for {float(clip_seconds):g} s at {float(fps):g} fps "
                     f"(benchmark facts {'used' if plan.facts.get('bench_available') else 'not available'}):")
        lines.append(plan.explain_table())
        return "\n".join(lines), run_plan_payload(plan, weights_value, "LatentSync GPU Benchmark")


# Keys are saved in workflows and shared by every installed pack: prefixed so another
# LatentSync pack's "LatentSync" node cannot shadow (or be shadowed by) these.
NODE_CLASS_MAPPINGS = {
    "LatentSyncRunner": LatentSync,
    "LatentSyncRunnerAutoOptimize": LatentSyncAutoOptimize,
    "LatentSyncRunnerGPUBenchmark": LatentSyncGPUBenchmark,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LatentSyncRunner": "LatentSync",
    "LatentSyncRunnerAutoOptimize": "LatentSync Auto-Optimize",
    "LatentSyncRunnerGPUBenchmark": "LatentSync GPU Benchmark",
}

host.register_model_folder()
