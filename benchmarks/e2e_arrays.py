"""Seconds per video-second of the plans the rules resolve, end to end in memory.

The user's run path (`latentsync.runner.run_clip`: plan -> pipeline -> job report) on
`latentsync.bench.core.bench_clip` (frames of noise with the face at a known place, so no
detector; 1280x720 at 25 fps; speech-like noise as audio) into an in-memory sink: alignment,
audio features, VAE, UNet, paste-back on the plan's CPU threads are all in; video decode,
face detection and video encode are not (they need PyAV and MediaPipe, which
`benchmarks/e2e_pipeline.py` times with files). Each preset runs once on a short clip first
(compile, cuDNN autotune), untimed. Works with any checkout that has these entry points,
so the same script times the code before and after a change:

    python benchmarks/e2e_arrays.py --seconds 6.48 --presets rules:quality,rules:preview --json out.json
    PYTHONPATH=/path/to/older/checkout python benchmarks/e2e_arrays.py ...

A preset is `rules:<goal>` or `rules:<goal>+setting=value+...` (overrides, as a plan's).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def run(preset: str, seconds: float, warmup_seconds: float, weights: str, size: tuple[int, int]) -> dict:
    import torch
    import yaml

    from latentsync.api import plan_for_arrays
    from latentsync.bench.core import bench_clip
    from latentsync.pipeline.clips import ArrayFrameSink
    from latentsync.runner import run_clip

    goal, *pairs = preset[len("rules:"):].split("+")
    overrides = {key: yaml.safe_load(value) for key, _, value in (pair.partition("=") for pair in pairs)}
    frames = int(round(seconds * 25))
    _, plan = plan_for_arrays(n_frames=frames, fps=25.0, audio_seconds=seconds, weights=weights, goal=goal,
                              overrides=overrides)
    job = {"video": "<benchmark clip>", "output": "<memory>", "weights": weights}
    resolution = plan.settings.resolution
    result = {"preset": preset, "settings": dict(plan.settings.to_dict()), "seconds": seconds}
    if warmup_seconds > 0:
        clip = bench_clip(int(round(warmup_seconds * 25)), width=size[0], height=size[1], resolution=resolution)
        start = time.perf_counter()
        warm = run_clip(clip, ArrayFrameSink(), plan, weights=weights, job=job)
        result["warmup_wall_s"] = time.perf_counter() - start
        result["warmup_status"] = warm.status
    clip = bench_clip(frames, width=size[0], height=size[1], resolution=resolution)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    report = run_clip(clip, ArrayFrameSink(), plan, weights=weights, job=job)
    wall = time.perf_counter() - start
    run_s = wall - report.timings.get("load_models", 0.0)
    result.update(status=report.status, error=report.error, wall_s=wall, run_s=run_s,
                  frames_in=frames, frames_out=report.frames_total,
                  seconds_per_video_second=run_s / (report.frames_total / 25.0) if report.frames_total else None,
                  timings=dict(report.timings), stats=dict(report.stats), peak_vram_gib=report.peak_vram_gib,
                  fallbacks_applied=report.fallbacks_applied)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.48)
    parser.add_argument("--warmup-seconds", type=float, default=1.32)
    parser.add_argument("--presets", default="rules:quality,rules:preview")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--label", default="", help="a name for this checkout in the JSON (e.g. before / after)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/e2e_arrays.json"))
    args = parser.parse_args(argv)

    import torch

    results = {"label": args.label, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "clip": {"width": args.width, "height": args.height, "seconds": args.seconds, "fps": 25},
               "weights": args.weights, "runs": []}
    for preset in [p for p in args.presets.split(",") if p]:
        try:
            row = run(preset, args.seconds, args.warmup_seconds, args.weights, (args.width, args.height))
        except Exception as error:  # a failed preset is a result too
            row = {"preset": preset, "status": "error", "error": f"{type(error).__name__}: {error}"}
        results["runs"].append(row)
        keys = ("settings",)
        print(json.dumps({k: v for k, v in row.items() if k not in keys}, default=str), flush=True)
        s = row.get("settings", {})
        print(f"{args.label} {preset}: {row.get('seconds_per_video_second')} s/video-s, frames "
              f"{row.get('frames_in')} -> {row.get('frames_out')}, compile={s.get('compile')} "
              f"fpb={s.get('frames_per_batch')} cpu_workers={s.get('cpu_workers')} paste={s.get('paste_backend')}",
              flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
