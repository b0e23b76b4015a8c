"""Drop folder with the real pipeline: from a clip's claim to its first synthesized chunk.

Three copies of a clip (with speech) go into INBOX; `latentsync-run watch --once` (the
`Watcher` with its default executor, `runner.run_job`) processes them one after the other
in this process. A wrapper around the executor records when each job is handed over
(the claim is done), when the UNet is first called for it (its first chunk starts on the
device: a global forward pre-hook) and when its pipeline reports the first finished chunk (the
first `frames` progress callback). The first clip pays imports, model load and kernel warm-up;
the later ones run on the resident models (the job reports say `warm.models: resident`).

    python benchmarks/watch_first_chunk.py --weights random-small --json r.json        # CPU, CI-sized
    python benchmarks/watch_first_chunk.py --weights random --seconds 5 --width 1280 --height 720   # a GPU
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="random-small")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--goal", default="preview")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "latentsync-watch-first-chunk")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.e2e_pipeline import make_clip
    from latentsync.runner import run_job
    from latentsync.watch.watcher import Watcher, WatchConfig

    shutil.rmtree(args.workdir / "inbox", ignore_errors=True)
    shutil.rmtree(args.workdir / "outbox", ignore_errors=True)
    video, audio = make_clip(args.workdir / "clips", args.seconds, args.width, args.height)
    inbox, outbox = args.workdir / "inbox", args.workdir / "outbox"
    inbox.mkdir(parents=True)
    for i in range(args.clips):
        shutil.copy(video, inbox / f"clip{i}.mp4")
        shutil.copy(audio, inbox / f"clip{i}.wav")
    rows: list[dict] = []

    import torch

    current: dict = {}

    def unet_started(module, args, kwargs=None):
        row = current.get("row")
        if row is not None and row["first_unet_call"] is None and type(module).__name__ == "UNet3DConditionModel":
            row["first_unet_call"] = time.perf_counter()

    torch.nn.modules.module.register_module_forward_pre_hook(unet_started)

    def timed_executor(spec, **kwargs):
        row = {"clip": Path(str(spec.video)).name, "claimed": time.perf_counter(), "first_chunk": None,
               "first_unet_call": None}
        current["row"] = row
        inner = kwargs.get("progress")

        def progress(stage, done, total):
            if stage == "frames" and row["first_chunk"] is None:
                row["first_chunk"] = time.perf_counter()
            if inner is not None:
                inner(stage, done, total)

        kwargs["progress"] = progress
        report = run_job(spec, **kwargs)
        row["finished"] = time.perf_counter()
        row["warm"] = report.warm
        row["load_models_s"] = round(report.timings.get("load_models", 0.0), 3)
        rows.append(row)
        return report

    config = WatchConfig(inbox=inbox, outbox=outbox, weights=args.weights, goal=args.goal, pair_wait=0.5,
                         settle=0.2)
    watcher = Watcher(config, executor=timed_executor)
    started = time.perf_counter()
    watcher.run(once=True)
    results = []
    for row in rows:
        first = None if row["first_chunk"] is None else round(row["first_chunk"] - row["claimed"], 3)
        start = None if row["first_unet_call"] is None else round(row["first_unet_call"] - row["claimed"], 3)
        results.append({"clip": row["clip"], "claim_to_first_chunk_start_s": start, "claim_to_first_chunk_s": first,
                        "claim_to_output_s": round(row["finished"] - row["claimed"], 3),
                        "load_models_s": row["load_models_s"], "models": row["warm"].get("models"),
                        "kernel_cache": row["warm"].get("kernel_cache")})
        print(f"{row['clip']:10s} claim -> first chunk starts {start} s, done {first} s, -> output "
              f"{results[-1]['claim_to_output_s']} s, load {row['load_models_s']} s, models {results[-1]['models']}",
              flush=True)
    if args.json:
        from benchmarks.results import write_results

        write_results(args.json, results, weights=args.weights, goal=args.goal,
                      clip={"seconds": args.seconds, "width": args.width, "height": args.height},
                      wall_s=round(time.perf_counter() - started, 2))
    return 0 if len(rows) == args.clips else 1


if __name__ == "__main__":
    sys.exit(main())
