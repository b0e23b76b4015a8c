"""Batch throughput on Ray: the same batch on 1 GPU, then on 2 (Ray resources), clips/s and the speed-up.

One Ray task per clip with num_gpus=1; the local Ray instance is restarted with
`num_gpus=k` for each k, so k tasks run at once, each on its own GPU (Ray sets
CUDA_VISIBLE_DEVICES per task). Before each timed batch every GPU runs one
warm-up clip (worker start-up, CUDA context, weights), excluded from the timing.
Target on 2 x H100: speed-up >= 1.9x.

    python benchmarks/ray_throughput.py --gpus 1,2 --clips 16 --seconds 10 --weights random \\
        --json benchmarks/results/ray_throughput.json
    python benchmarks/ray_throughput.py --gpus 1,2 --clips 4 --seconds 1 --weights random-small --cpu   # smoke test
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_pipeline import make_clip  # noqa: E402 — the shared synthetic clip (face + speech-like audio)


def specs_for(video: Path, audio: Path, out: Path, count: int, weights: str, overrides: dict):
    from latentsync.jobs import JobSpec

    return [JobSpec(video=video, audio=audio, output=out / f"clip{index:03d}.mp4", weights=weights,
                    overrides=dict(overrides), name=f"clip{index:03d}") for index in range(count)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="1,2", help="GPU counts to compare, in order (default 1,2)")
    parser.add_argument("--clips", type=int, default=16, help="clips per batch (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--weights", default="random", help="random | random-small | a weights folder")
    parser.add_argument("--steps", type=int, default=None, help="override the rules' denoising steps")
    parser.add_argument("--rules", type=Path, default=None, help="rules folder (default: bundled)")
    parser.add_argument("--cpu", action="store_true", help="no GPUs: the counts are CPU slots (smoke test)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/latentsync-ray-throughput"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ray_throughput.json"))
    args = parser.parse_args(argv)

    import ray

    from latentsync.distributed import connect
    from latentsync.distributed.batch import run_batch

    counts = [int(c) for c in args.gpus.split(",") if c.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    video, audio = make_clip(args.workdir, args.seconds, args.width, args.height)
    overrides = {"steps": args.steps} if args.steps else {}
    runs = []
    for count in counts:
        if ray.is_initialized():
            ray.shutdown()
        if args.cpu:
            connect(None, num_cpus=count, num_gpus=0)
        else:
            connect(None, num_gpus=count, num_cpus=max(4, 2 * count))
            available = ray.cluster_resources().get("GPU", 0)
            if available < count:
                print(f"only {available:g} GPU(s) visible, {count} asked", file=sys.stderr)
                return 2
        out = args.workdir / f"out_{count}"
        shutil.rmtree(out, ignore_errors=True)
        warm = run_batch(specs_for(video, audio, out / "warmup", count, args.weights, overrides), rules=args.rules,
                         max_retries=0, show_progress=False)
        if warm.failed:
            print(f"warm-up failed: {warm.failed[0].error}", file=sys.stderr)
            return 1
        started = time.perf_counter()
        result = run_batch(specs_for(video, audio, out, args.clips, args.weights, overrides), rules=args.rules,
                           max_retries=0, show_progress=None)
        wall = time.perf_counter() - started
        placements = sorted({(c.placement.get("host"), ",".join(c.placement.get("gpu_ids") or [])) for c in result.ok})
        devices = sorted({(c.report or {}).get("device") for c in result.ok} - {None})
        run = {"gpus": count, "clips": args.clips, "ok": len(result.ok), "failed": len(result.failed),
               "wall_s": wall, "clips_per_s": len(result.ok) / wall, "video_s_per_s": len(result.ok) * args.seconds / wall,
               "per_clip_s": sorted(c.seconds for c in result.ok), "placements": placements, "devices": devices}
        runs.append(run)
        print(f"{count} {'CPU slot' if args.cpu else 'GPU'}(s): {run['ok']}/{args.clips} clips in {wall:.1f} s = "
              f"{run['clips_per_s']:.3f} clips/s on {placements}")
    if ray.is_initialized():
        ray.shutdown()
    base = runs[0]["clips_per_s"] if runs else 0.0
    for run in runs:
        run["speedup"] = run["clips_per_s"] / base if base else None
    if len(runs) > 1:
        print(f"speed-up {runs[-1]['gpus']} vs {runs[0]['gpus']}: {runs[-1]['speedup']:.2f}x (target >= 1.9x for 2 vs 1)")
    record = {"benchmark": "ray_throughput", "host": platform.node(), "ray": ray.__version__,
              "clip": {"seconds": args.seconds, "width": args.width, "height": args.height, "fps": 25},
              "weights": args.weights, "overrides": overrides, "cpu": args.cpu, "runs": runs,
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    temp = args.json.with_name(args.json.name + ".partial")
    temp.write_text(json.dumps(record, indent=2) + "\n")
    temp.replace(args.json)
    print(f"wrote {args.json}")
    return 0 if all(r["failed"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
