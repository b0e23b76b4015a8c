"""Time to result: what a user waits for, from process start to the finished mp4.

Each case runs `latentsync-run PLAN.yaml` (the CLI's own `main`) in a **fresh process** on a
1280x720 25 fps clip with speech-like audio, with its caches either cold (empty cache folders:
XDG_CACHE_HOME points at a new temp folder, TRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR unset, so
the keyed cache of `latentsync/pipeline/compile_cache.py` lives there) or
warm (one folder shared by the warm cases, primed by `--prime` first: `latentsync-run warmup`,
or a run of the same plan). The parent measures the wall time; the child records

- interpreter + imports: process start (from /proc) to the moment the CLI is called;
- model load, and the pipeline's stages, from the job report (`timings`);
- the first UNet batch and the steady ones (`stats.gpu_batch_seconds`);
- with `--trace`: each top-level module call (UNet, VAE encoder/decoder, Whisper encoder)
  synchronised and timed, so a call's first-time excess over later calls of the same shape
  (kernel JIT, cuDNN autotuning, lazy initialisation) is visible; Triton JIT seconds (the
  compiler's own entry point, timed); torch.compile's seconds (dynamo's compile_times).

    python benchmarks/cold_start.py --seconds 5,12.8,60 --goals quality --caches cold,warm --json r.json
    python benchmarks/cold_start.py --seconds 12.8 --goals quality --caches warm --trace \\
        --variant "cudnn_benchmark=false" --variant "temporal_attention_kernel=sdpa,geglu_kernel=torch"
    python benchmarks/cold_start.py --seconds 2 --weights random-small --device cpu --caches cold   # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRACED = {"UNet3DConditionModel": "unet", "Encoder": "vae_encoder", "Decoder": "vae_decoder",
          "WhisperEncoder": "whisper_encoder", "AudioEncoder": "whisper_encoder"}


# ---------------------------------------------------------------------------- child side

def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), None elsewhere."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start
    except (OSError, ValueError, IndexError):
        return None


def _install_trace(record: dict) -> None:
    """Global forward hooks timing the top-level models' calls (synchronised), and a timer
    around Triton's compiler entry point."""
    import torch

    calls = record.setdefault("calls", [])
    open_calls: dict[int, float] = {}

    def shape_of(args, kwargs):
        for value in list(args) + list(kwargs.values()):
            if isinstance(value, torch.Tensor):
                return list(value.shape)
        return []

    # The timing itself runs outside dynamo: a compiled model's hooks are traced with it, and
    # synchronize/perf_counter/list.append each broke the graph there (H200, compiled quality,
    # warm cache: 28 graph breaks, warm-up 41.7 s traced against 31.4 s untraced). Now one
    # break at each end of a traced model's call; compare compiled warm-ups untraced.
    @torch.compiler.disable
    def start(module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        open_calls[id(module)] = time.perf_counter()

    @torch.compiler.disable
    def stop(module, name, args):
        if id(module) not in open_calls:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        calls.append({"module": name, "shape": shape_of(args, {}),
                      "seconds": round(time.perf_counter() - open_calls.pop(id(module)), 5)})

    def pre(module, args, kwargs=None):
        if TRACED.get(type(module).__name__) is not None:
            start(module)
        return None

    def post(module, args, output):
        name = TRACED.get(type(module).__name__)
        if name is not None:
            stop(module, name, args)
        return None

    torch.nn.modules.module.register_module_forward_pre_hook(pre)
    torch.nn.modules.module.register_module_forward_hook(post)

    try:
        import triton.compiler.compiler as compiler_module
        import triton.runtime.jit as jit_module
    except ImportError:
        return
    original = compiler_module.compile
    jit = record.setdefault("triton_jit", {"count": 0, "seconds": 0.0})

    def timed_compile(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            jit["count"] += 1
            jit["seconds"] = round(jit["seconds"] + time.perf_counter() - start, 4)

    compiler_module.compile = timed_compile
    for holder in (jit_module, getattr(jit_module, "JITFunction", None)):
        if holder is not None and getattr(holder, "compile", None) is original:
            setattr(holder, "compile", timed_compile)
    import triton.compiler as package

    if getattr(package, "compile", None) is original:
        package.compile = timed_compile


def first_call_excess(calls: list[dict]) -> dict[str, float]:
    """Per module: sum over shapes of (first call - median of the later calls of that shape)."""
    from statistics import median

    by_key: dict[tuple, list[float]] = {}
    for call in calls:
        by_key.setdefault((call["module"], tuple(call["shape"])), []).append(call["seconds"])
    excess: dict[str, float] = {}
    for (module, _), seconds in by_key.items():
        rest = seconds[1:]
        extra = seconds[0] - (median(rest) if rest else 0.0)
        excess[module] = round(excess.get(module, 0.0) + max(extra, 0.0), 3)
    return excess


def child(plan: Path, out: Path, trace: bool) -> int:
    record: dict = {"process_age_at_main_s": process_age_s()}
    started = time.perf_counter()
    from latentsync.cli import run as cli  # what `latentsync-run` imports; the rest it imports on first use
    import latentsync.pipeline.lipsync  # noqa: F401
    import latentsync.runner  # noqa: F401
    import torch  # noqa: F401

    record["imports_s"] = round(time.perf_counter() - started, 3)
    if trace:
        _install_trace(record)
    code = cli.main(["run", str(plan), "--overwrite", "--json"])
    record["exit_code"] = code
    record["run_s"] = round(time.perf_counter() - started - record["imports_s"], 3)
    try:
        import torch._dynamo.utils as dynamo_utils

        # per phase, summed over every compiled frame: where a compiled warm-up goes
        # (dynamo's tracing, AOTAutograd, inductor: codegen or loading from its cache)
        times = dynamo_utils.compile_times(repr="csv")
        names, values = times if isinstance(times, tuple) else ([], [])
        seconds = {}
        for name, text in zip(names, values):
            numbers = [float(v) for v in str(text).split(",") if v.strip()]
            seconds[str(name)] = {"calls": len(numbers), "seconds": round(sum(numbers), 3)}
        record["dynamo_compile_seconds"] = seconds
        record["compile_counters"] = {group: dict(counts) for group, counts in dynamo_utils.counters.items()
                                      if group in ("inductor", "aot_autograd", "stats", "frames", "graph_break")}
    except Exception as exc:  # noqa: BLE001 — optional diagnostics
        record["dynamo_compile_error"] = repr(exc)
    if "calls" in record:
        record["first_call_excess_s"] = first_call_excess(record["calls"])
        record["calls"] = record["calls"][:400]
    out.write_text(json.dumps(record, indent=1))
    return code


# ---------------------------------------------------------------------------- parent side

def parse_variant(text: str) -> dict:
    import yaml

    overrides = {}
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def cache_env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(key, None)
    env["XDG_CACHE_HOME"] = str(folder)  # the keyed compile/kernel cache lives under it (compile_cache.py)
    return env


def write_plan(path: Path, video: Path, audio: Path, output: Path, weights: str, goal: str, overrides: dict,
               device: str | None) -> None:
    import yaml

    settings = dict(overrides)
    if device == "cpu":
        settings.setdefault("device", "cpu")
    job = {"video": str(video), "audio": str(audio), "output": str(output), "weights": weights, "goal": goal}
    if settings:
        job["overrides"] = settings
    path.write_text(yaml.safe_dump(job, sort_keys=False))


def run_case(plan: Path, env: dict, trace: bool, workdir: Path, timeout: float) -> dict:
    trace_out = workdir / f"trace_{time.time_ns()}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(plan), "--trace-out", str(trace_out)]
    if trace:
        command.append("--trace")
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    row: dict = {"wall_s": round(wall, 2), "exit_code": done.returncode}
    if trace_out.exists():
        row.update(json.loads(trace_out.read_text()))
    else:
        row["stderr_tail"] = done.stderr[-3000:]
    try:
        results = json.loads(done.stdout[done.stdout.index("["):])
        report_path = results[0].get("report")
    except (ValueError, IndexError, AttributeError, TypeError):
        report_path = None
    if report_path and Path(report_path).exists():
        report = json.loads(Path(report_path).read_text())
        row["report"] = {key: report.get(key) for key in ("timings", "seconds_total", "video_seconds", "warm",
                                                          "settings_applied", "device")}
        batches = (report.get("stats") or {}).get("gpu_batch_seconds") or []
        row["gpu_batch_seconds"] = batches
    if done.returncode != 0:
        row["stderr_tail"] = done.stderr[-3000:]
    return row


def breakdown(row: dict) -> dict:
    """The wall time split the way the issue asks, from one row."""
    report = row.get("report") or {}
    timings = report.get("timings") or {}
    batches = row.get("gpu_batch_seconds") or []
    age = row.get("process_age_at_main_s") or 0.0
    steady = sorted(batches[1:])
    typical = steady[len(steady) // 2] if steady else None
    return {
        "wall_s": row.get("wall_s"),
        "interpreter_and_imports_s": round(age + (row.get("imports_s") or 0.0), 2),
        "load_models_s": round(timings.get("load_models", 0.0), 2),
        "first_batch_s": batches[0] if batches else None,
        "first_batch_excess_s": round(batches[0] - typical, 2) if batches and typical is not None else None,
        "steady_batches_s": round(sum(batches[1:]), 2) if batches else None,
        "triton_jit_s": (row.get("triton_jit") or {}).get("seconds"),
        "first_call_excess_s": row.get("first_call_excess_s"),
        "run_total_s": report.get("seconds_total"),
        "video_seconds": report.get("video_seconds"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help="time each top-level model call (synchronised)")
    parser.add_argument("--seconds", default="12.8", help="clip lengths, comma-separated (default 12.8)")
    parser.add_argument("--goals", default="quality", help="goals, comma-separated (default quality)")
    parser.add_argument("--caches", default="cold,warm", help="cold and/or warm (default both)")
    parser.add_argument("--variant", action="append", default=None, metavar="K=V[,K=V]",
                        help="setting overrides for one variant (repeatable; default: the rules' plan)")
    parser.add_argument("--prime", choices=("run", "warmup", "none"), default="run",
                        help="how the warm cache folder is filled before the warm cases (default: one run of the case)")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default=None, help="cpu: force the CPU (smoke tests)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "latentsync-cold-start")
    parser.add_argument("--warm-cache", type=Path, default=None, help="the warm cache folder (default WORKDIR/cache)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one case may take")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.trace_out, args.trace)

    from benchmarks.e2e_pipeline import make_clip

    args.workdir.mkdir(parents=True, exist_ok=True)
    warm_cache = args.warm_cache or args.workdir / "cache"
    variants = [parse_variant(v) for v in (args.variant or [""])]
    rows = []
    primed: set = set()
    for seconds in [float(s) for s in args.seconds.split(",")]:
        video, audio = make_clip(args.workdir / "clips", seconds, args.width, args.height)
        for goal in args.goals.split(","):
            for overrides in variants:
                for caches in args.caches.split(","):
                    plan = args.workdir / f"plan_{goal}_{seconds:g}.yaml"
                    output = args.workdir / f"out_{goal}_{seconds:g}.mp4"
                    write_plan(plan, video, audio, output, args.weights, goal, overrides, args.device)
                    if caches == "cold":
                        folder = Path(tempfile.mkdtemp(prefix="cold-cache-", dir=args.workdir))
                    else:
                        folder = warm_cache
                        key = (goal, seconds, json.dumps(overrides, sort_keys=True))
                        if args.prime != "none" and key not in primed:
                            if args.prime == "warmup":
                                subprocess.run([sys.executable, "-m", "latentsync.cli.run", "warmup", "--goals", goal,
                                                "--weights", args.weights], env=cache_env(folder), check=False,
                                               timeout=args.timeout)
                            else:
                                run_case(plan, cache_env(folder), False, args.workdir, args.timeout)
                            primed.add(key)
                    was_empty = not any(folder.iterdir()) if folder.exists() else True
                    row = run_case(plan, cache_env(folder), args.trace, args.workdir, args.timeout)
                    row["cache_folder_was_empty"] = was_empty  # `--caches warm --prime none` on a new folder: cold
                    if caches == "cold":
                        shutil.rmtree(folder, ignore_errors=True)
                    row.update(seconds=seconds, goal=goal, caches=caches, overrides=overrides)
                    row["breakdown"] = breakdown(row)
                    rows.append(row)
                    b = row["breakdown"]
                    state = caches if caches == "cold" or not was_empty else "warm folder, empty: cold"
                    print(f"{goal:8s} {seconds:5g}s {state:4s} {json.dumps(overrides):40s} wall {row['wall_s']:7.1f} s"
                          f"  imports {b['interpreter_and_imports_s']:5.1f}  load {b['load_models_s']:5.1f}"
                          f"  first batch {b['first_batch_s']}  excess {b['first_batch_excess_s']}"
                          f"  triton {b['triton_jit_s']}  exit {row['exit_code']}", flush=True)
                    if row.get("first_call_excess_s"):
                        print(f"         first-call excess by module: {row['first_call_excess_s']}", flush=True)
                    if row["exit_code"] != 0:
                        print(row.get("stderr_tail", ""), flush=True)
    if args.json:
        from benchmarks.results import write_results

        write_results(args.json, rows)
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
