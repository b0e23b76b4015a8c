"""Peak host memory of the whole pipeline on 1, 5 and 10 minute clips (CPU, small model).

Each length runs in a fresh child process: the bundled 3 s quickstart clip is
lip-synced to N minutes of speech-like audio, so the video ping-pongs through
the streaming reader for the whole length (forward and backward passes), faces
are detected on every frame, the small random-weight model runs on every chunk,
and the result is encoded. Upstream holds every frame in memory and exhausts
64 GB at 2-3 minutes; the target here is flat and <= 4 GB at 10 minutes.

    python benchmarks/memory_pipeline.py --minutes 1,5,10 --json benchmarks/results/memory_pipeline.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from latentsync.jobs import JobSpec
from latentsync.runner import run_job
spec = JobSpec(video=Path({video!r}), audio=Path({audio!r}), output=Path({output!r}), weights="random-small",
               overrides={{"steps": {steps}, "cfg_mode": "off"}})
start = time.perf_counter()
report = run_job(spec)
print(json.dumps({{"seconds": time.perf_counter() - start, "frames": report.frames_total,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "timings": report.timings}}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,5,10")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/latentsync-memory"))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "memory_pipeline.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from examples.make_quickstart_assets import speech_like, write_wav

    args.workdir.mkdir(parents=True, exist_ok=True)
    video = ROOT / "examples" / "assets" / "quickstart.mp4"
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",") if m]:
        audio = args.workdir / f"speech_{minutes:g}min.wav"
        if not audio.exists():
            write_wav(audio, speech_like(minutes * 60.0))
        output = args.workdir / f"out_{minutes:g}min.mp4"
        code = CHILD.format(root=str(ROOT), video=str(video), audio=str(audio), output=str(output), steps=args.steps)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{minutes} min run failed")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        # ru_maxrss of children: the peak of the largest child so far (each runs alone).
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        row = {"minutes": minutes, "frames": child["frames"], "wall_s": wall, "peak_rss_gib": child["peak_rss_gib"],
               "children_peak_rss_gib": child_peak, "timings": child["timings"]}
        rows.append(row)
        print(f"{minutes:5g} min  {child['frames']:6d} frames  peak RSS {child['peak_rss_gib']:.2f} GiB  "
              f"wall {wall:7.1f} s", flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0], "steps": args.steps,
              "model": "random-small (CPU)", "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"{'minutes':>7s} {'frames':>7s} {'peak RSS GiB':>13s}")
    for row in rows:
        print(f"{row['minutes']:7g} {row['frames']:7d} {row['peak_rss_gib']:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
