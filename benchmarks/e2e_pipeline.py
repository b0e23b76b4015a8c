"""End-to-end seconds per video-second: decode, faces, GPU, paste-back, encode.

Makes a 1280x720 25 fps clip (the astronaut photo, gently moving, on a larger
canvas) with speech-like audio, then runs the real streaming pipeline
(`latentsync.runner.run_pipeline`) with each preset's settings and reports wall
seconds per video-second, per-stage busy seconds, the GPU's busy fraction, peak
VRAM, and each preset's deviation from quality mode (PSNR of the lower-face
region against the quality output on the same inputs; random weights, so this
measures how far a fast mode drifts from the full computation, not real quality).

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
from latentsync.runner import run_pipeline  # noqa: E402

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


def resolve_preset(name: str, seconds: float, weights: str) -> tuple[dict, dict | None]:
    """A PRESETS name, or `rules:<goal>[+setting=value...]`: the plan rules/ resolves for this
    machine (GPU probed, clip facts pinned), optionally with overrides. Returns (settings, plan)."""
    if not name.startswith("rules:"):
        return dict(BASE, **PRESETS[name]), None
    import yaml

    from latentsync.api import plan_for_arrays

    goal, *pairs = name[len("rules:"):].split("+")
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        overrides[key] = yaml.safe_load(value)
    _, plan = plan_for_arrays(n_frames=int(round(seconds * 25)), fps=25.0, audio_seconds=seconds, weights=weights,
                              goal=goal, overrides=overrides)
    return dict(plan.settings), plan.to_dict()


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


def lower_face_psnr(a_path: Path, b_path: Path) -> float:
    import av

    def frames(path):
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                yield f.to_ndarray(format="rgb24")

    errors = []
    for a, b in zip(frames(a_path), frames(b_path)):
        h, w = a.shape[:2]
        region = (slice(int(h * 0.35), int(h * 0.85)), slice(int(w * 0.3), int(w * 0.7)))
        errors.append(np.mean((a[region].astype(np.float64) - b[region].astype(np.float64)) ** 2))
    mse = float(np.mean(errors))
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


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
        settings, plan = resolve_preset(name, args.seconds, args.weights)
        if args.cpu_workers is not None:
            settings["cpu_workers"] = args.cpu_workers
        if args.device:
            settings["device"] = args.device
        if settings["device"] == "cpu":
            settings["precision"] = "fp32"
        out = args.workdir / f"out_{name}.mp4"
        if args.warmup_seconds > 0:
            warm_video, warm_audio = make_clip(args.workdir, args.warmup_seconds, args.width, args.height)
            warm = JobSpec(video=warm_video, audio=warm_audio, output=args.workdir / "warmup.mp4", weights=args.weights)
            warm_start = time.perf_counter()
            run_pipeline(warm, dict(settings))
            warmup_s = time.perf_counter() - warm_start
            print(f"{name:18s} warm-up {warmup_s:.1f} s (untimed)", flush=True)
        else:
            warmup_s = None
        spec = JobSpec(video=video, audio=audio, output=out, weights=args.weights)
        start = time.perf_counter()
        try:
            result = run_pipeline(spec, settings)
        except Exception as exc:  # an OOM under a memory cap is a result
            results["runs"].append({"preset": name, "settings": settings, "error": repr(exc)[:400]})
            print(f"{name:18s} FAILED {exc!r}"[:200])
            continue
        wall = time.perf_counter() - start
        timings = result.timings
        steady = wall - timings.get("load_models", 0.0)
        outputs[name] = out
        run = {"preset": name, "settings": settings, "warmup_s": warmup_s, "wall_s": wall, "wall_s_without_model_load": steady,
               "s_per_video_s": steady / result.video_seconds, "timings": timings,
               "gpu_busy_fraction": timings.get("gpu", 0.0) / steady if steady else None,
               "peak_vram_gib": result.peak_vram_gib, "frames": result.frames_total, "stats": result.stats,
               "plan_sources": {k: v["rule"] for k, v in plan["sources"].items()} if plan else None}
        results["runs"].append(run)
        print(f"{name:18s} {run['s_per_video_s']:6.2f} s/video-s  gpu busy {run['gpu_busy_fraction']:.2f}  "
              f"peak {result.peak_vram_gib}  stages {json.dumps({k: round(v, 2) for k, v in timings.items()})}",
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
