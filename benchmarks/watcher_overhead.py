"""Drop-folder watcher overhead per clip (ms) and throughput (clips/s), with the fake pipeline.

    python benchmarks/watcher_overhead.py [--clips 100] [--json benchmarks/results/watcher_overhead.json]

What is measured: N clips (half of them with a companion .wav) are renamed into
INBOX at once; the clock runs from the first drop until the last output is in
OUTBOX. The fake pipeline (same interface as run_job, no model) times itself;
the watcher's overhead per clip is (wall time - pipeline time) / N. That is the
cost of discovery, the claim renames, the SQLite journal (WAL, synchronous=FULL:
six committed transitions per job), the staging -> OUTBOX moves and the report
rewrite. The per-phase split comes from the journal's own event timestamps.

Modes: `once` (`watch --once`: scan, then process), `inotify` (a running
watcher), `poll` (PollingObserver; readiness waits for two equal polls, so its
wall time includes the poll interval once). Each mode runs --repeat times and
the median is reported with the range: the journal commits with fsync, so the
numbers follow the disk. pair_wait is 0 here: in production
the default 5 s pair wait adds latency to each clip, not work, and clips
arriving together wait together.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loguru import logger  # noqa: E402

from latentsync.testing.fake_pipeline import FakePipeline, fake_load_ruleset, make_fake_audio, make_fake_video  # noqa: E402
from latentsync.watch import WatchConfig, Watcher  # noqa: E402


class TimedPipeline:
    """The fake pipeline, timing its own calls so they can be subtracted."""

    def __init__(self) -> None:
        self.pipeline = FakePipeline(chunks=4)
        self.seconds = 0.0

    def __call__(self, spec, **kwargs):
        started = time.perf_counter()
        try:
            return self.pipeline(spec, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def prepare(root: Path, clips: int, size: int) -> tuple[Path, Path, Path, list[Path]]:
    inbox, outbox, rules, source = root / "inbox", root / "outbox", root / "rules", root / "source"
    for folder in (inbox, rules, source):
        folder.mkdir(parents=True)
    (rules / "base.yaml").write_text("schema_version: 1\nversion: bench\n")
    files = []
    for index in range(clips):
        files.append(make_fake_video(source / f"clip{index:04d}.mp4", size=size, seed=index))
        if index % 2 == 0:
            files.append(make_fake_audio(source / f"clip{index:04d}.wav", size=size // 4, seed=index))
    return inbox, outbox, rules, files


def phase_means(journal_path: Path) -> dict[str, float]:
    """Mean ms per job spent claiming, waiting in the queue, running and finishing (journal timestamps)."""
    db = sqlite3.connect(journal_path)
    rows = db.execute("SELECT job_id, state, at FROM events ORDER BY id").fetchall()
    db.close()
    per_job: dict[int, dict[str, float]] = {}
    for job_id, state, at in rows:
        per_job.setdefault(job_id, {}).setdefault(state, at)
    spans = {"claim": ("claiming", "queued"), "run (pipeline + validation)": ("running", "finishing"),
             "finish (report, moves)": ("finishing", "done")}
    result = {}
    for label, (start, end) in spans.items():
        values = [(times[end] - times[start]) * 1000 for times in per_job.values() if start in times and end in times]
        result[label] = statistics.mean(values) if values else float("nan")
    return result


def run_mode(mode: str, clips: int, size: int, poll: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as temp:
        inbox, outbox, rules, files = prepare(Path(temp), clips, size)
        pipeline = TimedPipeline()
        config = WatchConfig(inbox=inbox, outbox=outbox, rules=rules, pair_wait=0.0, settle=0.05, tick=0.01,
                             poll=poll if mode == "poll" else None, log_file=True)
        watcher = Watcher(config, executor=pipeline, rules_loader=fake_load_ruleset)
        if mode == "once":
            for path in files:
                os.rename(path, inbox / path.name)
            started = time.perf_counter()
            watcher.run(once=True)
            wall = time.perf_counter() - started
            wall -= config.settle  # the deliberate stability wait before the first claim
        else:
            thread = threading.Thread(target=watcher.run, daemon=True)
            thread.start()
            watcher.ready.wait(10)
            started = time.perf_counter()
            for path in files:
                os.rename(path, inbox / path.name)
            expected = clips
            while True:
                done = sum(1 for p in outbox.iterdir() if p.suffix == ".mp4")
                if done >= expected:
                    break
                if time.perf_counter() - started > 600:
                    raise RuntimeError("benchmark timed out")
                time.sleep(0.002)
            wall = time.perf_counter() - started
            watcher.request_stop("benchmark over")
            thread.join(30)
        outputs = sum(1 for p in outbox.iterdir() if p.suffix == ".mp4")
        assert outputs == clips, f"{mode}: {outputs} outputs for {clips} clips"
        phases = phase_means(inbox / ".latentsync" / "journal.sqlite3")
    overhead = max(wall - pipeline.seconds, 0.0)
    return {
        "mode": mode,
        "clips": clips,
        "wall_s": round(wall, 4),
        "pipeline_s": round(pipeline.seconds, 4),
        "overhead_ms_per_clip": round(overhead / clips * 1000, 3),
        "throughput_clips_per_s": round(clips / wall, 2),
        "phase_ms": {k: round(v, 3) for k, v in phases.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--size", type=int, default=256 << 10, help="bytes per fake video (default 256 KiB)")
    parser.add_argument("--poll", type=float, default=0.5, help="poll interval for the poll mode")
    parser.add_argument("--modes", default="once,inotify,poll")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the median is reported (fsync-bound: noisy)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "watcher_overhead.json")
    args = parser.parse_args(argv)
    logger.remove()  # the watcher's console chatter would dominate the timing
    logging.getLogger("watchdog").setLevel(logging.CRITICAL)  # a benign shutdown race message
    results = []
    for mode in args.modes.split(","):
        runs = [run_mode(mode, args.clips, args.size, args.poll) for _ in range(args.repeat)]
        runs.sort(key=lambda r: r["overhead_ms_per_clip"])
        median = dict(runs[len(runs) // 2])
        median["repeats"] = args.repeat
        median["overhead_ms_per_clip_range"] = [runs[0]["overhead_ms_per_clip"], runs[-1]["overhead_ms_per_clip"]]
        median["throughput_clips_per_s_range"] = sorted(r["throughput_clips_per_s"] for r in runs)[::len(runs) - 1 or 1]
        results.append(median)
    header = (f"{'mode':<8} {'clips':>5} {'wall s':>8} {'fake s':>7} {'overhead ms/clip':>17} {'(min-max)':>13} "
              f"{'clips/s':>8}   phases (ms/job)")
    print(header)
    print("-" * len(header))
    for r in results:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phase_ms"].items())
        print(f"{r['mode']:<8} {r['clips']:>5} {r['wall_s']:>8.3f} {r['pipeline_s']:>7.3f} "
              f"{r['overhead_ms_per_clip']:>17.2f} {'%.1f-%.1f' % tuple(r['overhead_ms_per_clip_range']):>13} "
              f"{r['throughput_clips_per_s']:>8.1f}   {phases}")
    document = {
        "benchmark": "watcher_overhead",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "fake_video_bytes": args.size,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
