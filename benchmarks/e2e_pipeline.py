"""End-to-end seconds per video-second: decode, faces, GPU, paste-back, encode.

Makes a 1280x720 25 fps clip (the astronaut photo, gently moving, on a larger
canvas) with speech-like audio, then runs it through the user's run path
(`latentsync.runner.run_clip`: the plan's settings -> `LipSyncPipeline` -> job
report, as `latentsync-run` does) with each preset's settings and reports wall
seconds per video-second, per-stage busy seconds, the GPU's busy fraction, peak
VRAM, and each preset's deviation from quality mode (PSNR of the lower-face
region against the quality output on the same inputs; random weights, so this
measures how far a fast mode drifts from the full computation, not real quality).

A preset runs as a run plan: `rules:<goal>` is the plan the rules resolve here;
a PRESETS name is the BASE settings plus the preset's, every one of them a user
override of the rules (settings not named come from rules/v1/00_defaults.yaml).
Out of memory is a result (the row records it) unless --oom-ladder lets the
plan step down its own fallback ladder first, as a user's run would.

    python benchmarks/e2e_pipeline.py --seconds 10 --weights random --json benchmarks/results/e2e.json
    python benchmarks/e2e_pipeline.py --seconds 2 --weights random-small --device cpu --presets draft
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentsync.jobs import JobSpec  # noqa: E402
from latentsync.pipeline.clips import FileClipSource, VideoFileSink  # noqa: E402
from latentsync.quality.psnr import lower_face_psnr  # noqa: E402  (the PSNR latentsync-bench --quality stores)
from latentsync.runner import run_clip  # noqa: E402

BASE = dict(
    device="cuda", precision="fp16", resolution=512, scheduler="ddim", steps=20, guidance_scale=1.5,
    cfg_mode="all", cfg_fraction=1.0, uncond_audio_attention="compute", cfg_shared_prefix=False, deepcache=False, deepcache_interval=3, deepcache_branch=0,
    compile="off", cuda_graphs=False, frames_per_batch=16, chunk_frames=16, vae_slicing=False,
    vae_tiling=False, vae_batch=16, vae_decode_region="full", reference_frames="per_frame", paste_backend="cpu", attention_backend="auto", temporal_attention_pack=1, temporal_attention_kernel="sdpa", geglu_kernel="torch", channels_last=False, face_backend="mediapipe",
    seed=1247,
)
# Candidate preset settings measured here; the chosen ones live in rules/.
PRESETS = {
    "quality": {},
    "quality_compiled": dict(compile="default"),
    "quality_batch32": dict(frames_per_batch=32),
    "balanced": dict(deepcache=True, cfg_mode="first_fraction", cfg_fraction=0.5),
    "balanced_compiled": dict(deepcache=True, cfg_mode="first_fraction", cfg_fraction=0.5, compile="default"),
    "fast": dict(scheduler="dpmpp", steps=10, deepcache=True, deepcache_interval=2, cfg_mode="first_fraction",
                 cfg_fraction=0.3),
    "preview": dict(scheduler="dpmpp", steps=6, guidance_scale=1.0, cfg_mode="off", deepcache=True,
                    deepcache_interval=2),
    "draft": dict(device="cpu", precision="fp32", steps=4, cfg_mode="off", guidance_scale=1.0),
    # what rules/v1 resolves for an 8 GB card (`latentsync-rules explain ... --assume-gpu rtx4060-8gb`)
    "profile_8gb": dict(vae_slicing=True, vae_tiling=True, vae_batch=1, frames_per_batch=16, attention_backend="flash"),
    # the same presets with four chunks per UNet batch and torch.compile (measure with --warmup-seconds)
    "quality_b64": dict(frames_per_batch=64),
    "quality_b64_compiled": dict(frames_per_batch=64, compile="default"),
    "balanced_b64_compiled": dict(frames_per_batch=64, compile="default", deepcache=True,
                                  cfg_mode="first_fraction", cfg_fraction=0.5),
    "preview_b64": dict(frames_per_batch=64, scheduler="dpmpp", steps=6, guidance_scale=1.0, cfg_mode="off",
                        deepcache=True, deepcache_interval=2),
    "preview_b64_decode_mask": dict(frames_per_batch=64, scheduler="dpmpp", steps=6, guidance_scale=1.0,
                                    cfg_mode="off", deepcache=True, deepcache_interval=2, vae_decode_region="mask"),
    "preview_b64_decode_mask_gpu_paste": dict(frames_per_batch=64, scheduler="dpmpp", steps=6, guidance_scale=1.0,
                                              cfg_mode="off", deepcache=True, deepcache_interval=2,
                                              vae_decode_region="mask", paste_backend="torch"),
    "preview_b64_compiled": dict(frames_per_batch=64, compile="default", scheduler="dpmpp", steps=6,
                                 guidance_scale=1.0, cfg_mode="off", deepcache=True, deepcache_interval=2),
    # candidates with the VAE compiled too (compile reaches UNet and VAE since 2026-11-26, session 2)
    "preview_dc3_compiled": dict(frames_per_batch=64, compile="default", scheduler="dpmpp", steps=6,
                                 guidance_scale=1.0, cfg_mode="off", deepcache=True, deepcache_interval=3,
                                 vae_decode_region="mask"),
    "preview_dc2_compiled": dict(frames_per_batch=64, compile="default", scheduler="dpmpp", steps=6,
                                 guidance_scale=1.0, cfg_mode="off", deepcache=True, deepcache_interval=2,
                                 vae_decode_region="mask"),
    "balanced_dpmpp10_compiled": dict(frames_per_batch=64, compile="default", scheduler="dpmpp", steps=10,
                                      cfg_mode="first_fraction", cfg_fraction=0.5, deepcache=True,
                                      deepcache_interval=2),
    "balanced_dpmpp10_cfg30_compiled": dict(frames_per_batch=64, compile="default", scheduler="dpmpp", steps=10,
                                            cfg_mode="first_fraction", cfg_fraction=0.3, deepcache=True,
                                            deepcache_interval=2),
}
# the same candidates eager (compile off), to see what compilation buys once warm
PRESETS["preview_dc3"] = dict(PRESETS["preview_dc3_compiled"], compile="off")
PRESETS["balanced_dpmpp10_cfg30"] = dict(PRESETS["balanced_dpmpp10_cfg30_compiled"], compile="off")


def resolve_preset(name: str, seconds: float, weights: str):
    """A PRESETS name, or `rules:<goal>[+setting=value...]`: the plan rules/ resolves for this
    machine (GPU probed, clip facts pinned), optionally with overrides. Returns (settings, plan):
    every setting's value (a PRESETS name: BASE + the preset over the rules' defaults) and, for
    `rules:`, the resolved RunPlan (None for PRESETS)."""
    if not name.startswith("rules:"):
        from latentsync.testing.pipeline_helpers import default_settings

        return default_settings(**dict(BASE, **PRESETS[name])).to_dict(), None
    import yaml

    goal, *pairs = name[len("rules:"):].split("+")
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        overrides[key] = yaml.safe_load(value)
    plan = plan_for(seconds, weights, goal, overrides)
    return plan.settings.to_dict(), plan


def plan_for(seconds: float, weights: str, goal: str, overrides: dict):
    """The RunPlan the rules resolve for a clip of `seconds` here, with `overrides` (the user wins)."""
    from latentsync.api import plan_for_arrays

    _, plan = plan_for_arrays(n_frames=int(round(seconds * 25)), fps=25.0, audio_seconds=seconds, weights=weights,
                              goal=goal, overrides=overrides)
    return plan


def run_plan_for(settings: dict, resolved, seconds: float, weights: str, *, oom_ladder: bool):
    """The RunPlan a preset runs as: a `rules:` preset's resolved plan with this run's changes
    (--device, --cpu-workers) on top; a PRESETS name as a plan whose every setting is a user
    override. Without `oom_ladder` the plan has no fallback steps: out of memory ends the run
    (a result here). The settings are validated like any plan's (RunSettings)."""
    from dataclasses import replace

    from latentsync.settings import RunSettings

    if resolved is not None:
        plan = replace(resolved, settings=RunSettings.from_mapping(settings, where="benchmark preset"))
    else:
        plan = plan_for(seconds, weights, "quality", settings)
        if plan.settings.to_dict() != settings:  # the user's values always win
            changed = {k: (v, plan.settings[k]) for k, v in settings.items() if plan.settings[k] != v}
            raise ValueError(f"the plan does not run the preset's settings: {changed}")
    return plan if oom_ladder else replace(plan, fallbacks=[])


def run_preset(plan, video: Path, audio: Path, output: Path, weights: str):
    """One clip through latentsync.runner.run_clip (as run_job runs it); returns its JobReport."""
    source = FileClipSource(video, audio)

    def sink_for(settings):
        return VideoFileSink(output, inputs=source.protected_paths(), crf=settings.encoder_crf,
                             preset=settings.encoder_preset)

    spec = JobSpec(video=video, audio=audio, output=output, weights=weights)
    return run_clip(source, sink_for, plan, weights=weights, job=spec.to_dict(), output=str(output))


def make_clip(folder: Path, seconds: float, width: int, height: int) -> tuple[Path, Path]:
    from examples.make_quickstart_assets import animated_frames, speech_like, write_wav

    from latentsync.video import VideoWriter

    folder.mkdir(parents=True, exist_ok=True)
    video, audio = folder / f"clip_{width}x{height}_{seconds:g}s.mp4", folder / f"speech_{seconds:g}s.wav"
    if video.exists() and audio.exists():
        return video, audio
    n = int(round(seconds * 25))
    faces = animated_frames(n)  # (n, 256, 256, 3)
    import cv2

    side = int(height * 0.6)
    with VideoWriter(video, width=width, height=height, fps=Fraction(25)) as writer:
        for i, face in enumerate(faces):
            canvas = np.full((height, width, 3), 90, np.uint8)
            canvas[:, :, 2] = 120
            big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            x = width // 2 - side // 2 + int(40 * math.sin(i / 20))
            y = height // 2 - side // 2
            canvas[y : y + side, x : x + side] = big
            writer.write(canvas)
    write_wav(audio, speech_like(seconds))
    return video, audio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default=None)
    parser.add_argument("--presets", default="quality,balanced,fast,preview")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/latentsync-e2e"))
    parser.add_argument("--memory-fraction", type=float, default=None,
                        help="cap this process's CUDA memory (e.g. 0.1 of an 80 GB card = an 8 GB profile)")
    parser.add_argument("--memory-gib", type=float, default=None,
                        help="cap this process's CUDA memory to this many GiB (sets --memory-fraction)")
    parser.add_argument("--reference", default=None,
                        help="preset whose output the others are compared with (default: quality or quality_b64)")
    parser.add_argument("--warmup-seconds", type=float, default=0.0,
                        help="run each preset once on a clip this long first (compile, cuDNN autotune), untimed")
    parser.add_argument("--cpu-workers", type=int, default=None,
                        help="threads per CPU stage for every preset (default: the preset's value; 1 for PRESETS)")
    parser.add_argument("--oom-ladder", action="store_true",
                        help="on out of memory, step down the plan's fallback ladder (as a user's run does) "
                             "instead of recording the failure")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/e2e.json"))
    args = parser.parse_args(argv)

    import torch

    if args.memory_gib and torch.cuda.is_available():
        args.memory_fraction = args.memory_gib * 2**30 / torch.cuda.get_device_properties(0).total_memory
    if args.memory_fraction and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction)
    video, audio = make_clip(args.workdir, args.seconds, args.width, args.height)
    results = {"warmup_seconds": args.warmup_seconds, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "clip": {"width": args.width, "height": args.height, "seconds": args.seconds, "fps": 25},
               "weights": args.weights, "memory_fraction": args.memory_fraction, "memory_gib": args.memory_gib,
               "runs": []}
    outputs = {}
    for name in [p for p in args.presets.split(",") if p]:
        settings, resolved = resolve_preset(name, args.seconds, args.weights)
        if args.cpu_workers is not None:
            settings["cpu_workers"] = args.cpu_workers
        if args.device:
            settings["device"] = args.device
        if settings["device"] == "cpu":
            settings["precision"] = "fp32"
        if settings["compile"] == "off":
            settings["cuda_graphs"] = False  # CUDA graphs replay compiled code (a plan may not ask for both)
        out = args.workdir / f"out_{name}.mp4"
        try:
            plan = run_plan_for(settings, resolved, args.seconds, args.weights, oom_ladder=args.oom_ladder)
        except Exception as exc:  # a preset the rules refuse (an invalid combination) is a result too
            results["runs"].append({"preset": name, "settings": settings, "error": repr(exc)[:400]})
            print(f"{name:18s} INVALID {exc!r}"[:200])
            continue
        if args.warmup_seconds > 0:
            warm_video, warm_audio = make_clip(args.workdir, args.warmup_seconds, args.width, args.height)
            warm_start = time.perf_counter()
            run_preset(plan, warm_video, warm_audio, args.workdir / "warmup.mp4", args.weights)
            warmup_s = time.perf_counter() - warm_start
            print(f"{name:18s} warm-up {warmup_s:.1f} s (untimed)", flush=True)
        else:
            warmup_s = None
        start = time.perf_counter()
        try:
            report = run_preset(plan, video, audio, out, args.weights)
        except Exception as exc:  # an OOM under a memory cap is a result
            results["runs"].append({"preset": name, "settings": settings, "error": repr(exc)[:400]})
            print(f"{name:18s} FAILED {exc!r}"[:200])
            continue
        wall = time.perf_counter() - start
        timings = report.timings  # the job report's: load_models (run_clip) + the pipeline's stages
        steady = wall - timings.get("load_models", 0.0)
        outputs[name] = out
        run = {"preset": name, "settings": report.settings_applied, "warmup_s": warmup_s, "wall_s": wall,
               "wall_s_without_model_load": steady, "s_per_video_s": steady / report.video_seconds,
               "timings": timings, "gpu_busy_fraction": timings.get("gpu", 0.0) / steady if steady else None,
               "peak_vram_gib": report.peak_vram_gib, "frames": report.frames_total, "stats": report.stats,
               "fallbacks_applied": [step["rule"] for step in report.fallbacks_applied],
               "warnings": report.warnings,
               "plan_sources": {k: v.rule for k, v in resolved.sources.items()} if resolved else None}
        results["runs"].append(run)
        print(f"{name:18s} {run['s_per_video_s']:6.2f} s/video-s  gpu busy {run['gpu_busy_fraction']:.2f}  "
              f"peak {report.peak_vram_gib}  stages {json.dumps({k: round(v, 2) for k, v in timings.items()})}",
              flush=True)
        if args.reference in outputs and name != args.reference:  # reference listed first: PSNR right away
            run["psnr_vs_quality_db"] = lower_face_psnr(outputs[args.reference], out)
            print(f"{name:18s} lower-face PSNR vs {args.reference}: {run['psnr_vs_quality_db']:.2f} dB", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))  # each run as it lands: a cut-off run keeps its rows
    reference = args.reference or next((name for name in ("quality", "quality_b64") if name in outputs), None)
    if reference:
        for run in results["runs"]:
            if run.get("preset") in outputs and run["preset"] != reference and "psnr_vs_quality_db" not in run:
                run["psnr_vs_quality_db"] = lower_face_psnr(outputs[reference], outputs[run["preset"]])
                print(f"{run['preset']:18s} lower-face PSNR vs {reference}: {run['psnr_vs_quality_db']:.2f} dB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
