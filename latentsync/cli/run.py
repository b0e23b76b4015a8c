"""`latentsync-run`: run a plan, watch a drop folder, or fetch the official weights.

    latentsync-run PLAN.yaml [--dry-run] [--rules DIR] [--json] [--contact-sheet]
    latentsync-run watch INBOX --out OUTBOX [--rules DIR] [--poll [SECONDS]] [--retries N] [--once]
    latentsync-run batch PLANS... [--ray [ADDRESS]] [--rules DIR] [--retries N] [--failed DIR] [--json]
    latentsync-run fetch-weights DIR
    latentsync-run example [quickstart|plan] [--out DIR] [--dry-run]

Errors print one line naming the file and field (plus a hint); `--verbose` adds
the traceback and debug logging.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from loguru import logger

from ..errors import LatentSyncError
from ..signals import signal_name, stop_on_signals

EXIT_OK, EXIT_JOB_FAILED, EXIT_INVALID_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMANDS = ("run", "watch", "batch", "fetch-weights", "example", "warmup")
EXAMPLES = ("quickstart", "plan")  # the plans shipped in examples/ (and inside the wheel)

EXIT_CODES_HELP = """\
exit codes:
  0    every job finished (watch: stopped cleanly)
  1    a job failed (watch --once: a job ended in INBOX/failed/)
  2    invalid input: plan, rules, an input file, or the folders given
       (takes precedence over 1 when both happen)
  130  interrupted (Ctrl-C) before the jobs finished
"""

TOP_DESCRIPTION = """\
LatentSync lip-sync runner.

  latentsync-run PLAN.yaml [--dry-run] [--rules DIR] [--json] [--contact-sheet]
      run the job(s) of a plan; --dry-run prints the explained run plan and exits
  latentsync-run watch INBOX --out OUTBOX [--rules DIR] [--poll [SECONDS]] [--retries N] [--once]
      watch a drop folder: clip.mp4 (+ clip.wav|mp3|m4a) or NAME.plan.yaml in, lip-synced clip out
  latentsync-run batch PLANS... [--ray [ADDRESS]]
      run the jobs of many plans on a Ray cluster, one task per clip (needs the ray extra)
  latentsync-run fetch-weights DIR
      download the official weights into DIR (needs huggingface_hub and internet)
  latentsync-run example [quickstart] [--out DIR]
      copy a bundled example (plan + clip + speech) into DIR and run it; works from an installed wheel

`latentsync-run COMMAND --help` describes each command.
"""


def _setup_console_logging(verbose: bool, *, through_tqdm: bool = False) -> None:
    logger.remove()
    level = "DEBUG" if verbose else "INFO"
    fmt = "{time:HH:mm:ss} {level: <7} {message}"
    if through_tqdm:
        from tqdm import tqdm

        logger.add(lambda message: tqdm.write(message, end="", file=sys.stderr), level=level, format=fmt,
                   backtrace=verbose, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=fmt, backtrace=verbose, diagnose=False)


def _print_error(error: BaseException, verbose: bool) -> int:
    """One clear line (plus the hint) on stderr; the exit code it deserves."""
    if verbose:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if isinstance(error, LatentSyncError):
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    message = str(error) or type(error).__name__
    print(f"error: {type(error).__name__}: {message}", file=sys.stderr)
    if not verbose:
        print("  hint: run again with --verbose for the full traceback", file=sys.stderr)
    return EXIT_JOB_FAILED


def _load_callable(reference: str) -> Callable[..., Any]:
    """`package.module:name` -> the object; `package.module:factory()` -> what the factory returns."""
    from ..errors import InvalidInputError

    module_name, _, attribute = reference.partition(":")
    call = attribute.endswith("()")
    attribute = attribute[:-2] if call else attribute
    if not module_name or not attribute:
        raise InvalidInputError(f"expected MODULE:CALLABLE, got {reference!r}", path="--executor",
                                hint="e.g. --executor latentsync.testing.fake_pipeline:FakePipeline()")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InvalidInputError(f"cannot load {reference!r}: {error}", path="--executor",
                                hint="check the module path and the name after the colon") from None
    return target() if call else target


# --------------------------------------------------------------------------- progress


class TqdmProgress:
    """Adapts `progress(stage, done, total)` to a tqdm bar per stage (units: chunks), with ETA."""

    def __init__(self, label: str, *, position: int = 1, file: Any = None, disable: Optional[bool] = None):
        self.label = label
        self.position = position
        self.file = file if file is not None else sys.stderr
        self.disable = disable
        self.stage: Optional[str] = None
        self.bar: Any = None
        self.stages_seen: list[str] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.stages_seen.append(stage)
            self.bar = tqdm(total=total, desc=f"{self.label} {stage}", unit="chunk", position=self.position,
                            leave=False, file=self.file, disable=self.disable, dynamic_ncols=True)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(max(0, done - self.bar.n))
        if total and done >= total:
            self.bar.refresh()  # tqdm throttles redraws; show the finished stage

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --------------------------------------------------------------------------- run a plan


def _cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    _setup_console_logging(args.verbose, through_tqdm=True)
    from ..engine import load_plan_file, load_ruleset

    from ..engine import PlanError
    from ..output_safety import check_outputs

    plan_path = Path(args.plan)
    ruleset = load_ruleset(Path(args.rules) if args.rules else None)
    specs = list(load_plan_file(plan_path))
    for spec in specs:
        if args.contact_sheet:
            spec.contact_sheet = True
        if getattr(args, "overwrite", False):
            spec.overwrite = True

    def in_plan(error: Exception, index: int) -> Exception:
        """A plan error found while resolving (an override against the rules) names the plan file and job."""
        if isinstance(error, PlanError):
            return error.with_file(str(plan_path), ["jobs", index] if len(specs) > 1 else [])
        return error

    if args.dry_run:
        from ..engine import gather_facts, resolve_plan

        plans = []
        for index, spec in enumerate(specs):
            facts = gather_facts(spec, ruleset, benchmark_cache=args.benchmark_cache)
            try:
                plan = resolve_plan(spec, facts, ruleset)
            except PlanError as error:
                raise in_plan(error, index) from None
            plans.append((spec, plan))
        if args.json:
            print(json.dumps([{"job": spec.to_dict(), "run_plan": plan.to_dict(),
                               "rules_version": getattr(ruleset, "version", None),
                               "rules_hash": getattr(ruleset, "hash", None)} for spec, plan in plans],
                             indent=2, default=str))
        else:
            for spec, plan in plans:
                print(f"# {spec.name or Path(spec.video).name} -> {spec.output}  "
                      f"(rules {getattr(ruleset, 'version', '?')} {str(getattr(ruleset, 'hash', ''))[:12]})")
                print(plan.explain_table())
                print()
        return EXIT_OK

    from ..runner import JobCancelled, run_job

    results: list[dict[str, Any]] = []
    worst = EXIT_OK
    with stop_on_signals(_announce_stop("stopping after the current chunk")) as stop, \
            tqdm(total=len(specs), desc="jobs", unit="job", position=0, file=sys.stderr, disable=None) as jobs_bar:
        for index, spec in enumerate(specs):
            label = spec.name or Path(spec.video).stem
            progress = TqdmProgress(label, position=1)
            started = time.perf_counter()
            entry: dict[str, Any] = {"job": label, "output": str(spec.output)}
            try:
                if stop.is_set():
                    raise JobCancelled("not started: interrupted", path=str(spec.video))
                # Outputs never overwrite an input or a file this job did not write (exit 2, naming both).
                check_outputs(spec, plan_file=plan_path)
                try:
                    report = run_job(spec, ruleset=ruleset, progress=progress, cancel=stop.is_set,
                                     benchmark_cache=args.benchmark_cache)
                except PlanError as error:
                    raise in_plan(error, index) from None
                entry.update(status="ok", seconds=round(time.perf_counter() - started, 3),
                             report=str(spec.report or Path(str(spec.output) + ".report.json")),
                             rules_version=report.rules_version, rules_hash=report.rules_hash,
                             warnings=list(report.warnings))
            except JobCancelled as error:
                entry.update(status="cancelled", error=error.to_dict())
                worst = max(worst, EXIT_INTERRUPTED)
            except Exception as error:  # noqa: BLE001 — reported per job; the others still run
                code = _print_error(error, args.verbose)
                entry.update(status="failed", error=error.to_dict() if isinstance(error, LatentSyncError)
                             else {"type": type(error).__name__, "message": str(error)})
                worst = max(worst, code) if worst != EXIT_INTERRUPTED else worst
            finally:
                progress.close()
            results.append(entry)
            jobs_bar.update(1)

    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        for entry in results:
            if entry["status"] == "ok":
                print(f"ok      {entry['job']} -> {entry['output']} ({entry['seconds']:.1f} s; report {entry['report']})")
            else:
                print(f"{entry['status']:<8}{entry['job']}: {entry['error'].get('message')}")
    return worst


# --------------------------------------------------------------------------- watch


def _cmd_watch(args: argparse.Namespace) -> int:
    _setup_console_logging(args.verbose)
    from ..watch import WatchConfig, Watcher

    config = WatchConfig(
        inbox=Path(args.inbox),
        outbox=Path(args.out),
        rules=Path(args.rules) if args.rules else None,
        poll=args.poll,
        retries=args.retries,
        retry_delay=args.retry_delay,
        pair_wait=args.pair_wait,
        settle=args.settle,
        weights=args.weights,
        goal=args.goal,
        state_dir=Path(args.state) if args.state else None,
        benchmark_cache=args.benchmark_cache,
        log_level="DEBUG" if args.verbose else "INFO",
        job_timeout=args.job_timeout,
        stop_grace=args.stop_grace,
    )
    executor = _load_callable(args.executor) if args.executor else None
    rules_loader = _load_callable(args.rules_loader) if args.rules_loader else None
    if args.ray is not None:
        from ..distributed import require_ray

        require_ray()  # exit 2 with the install hint before anything else happens
        from ..distributed.watch import RayWatcher

        watcher: Any = RayWatcher(config, address=args.ray or None, executor=executor, rules_loader=rules_loader,
                                  cpus_per_task=args.cpus_per_task)
    else:
        watcher = Watcher(config, executor=executor, rules_loader=rules_loader)
    try:
        summary = watcher.run(once=args.once)
    except KeyboardInterrupt:
        logger.warning("aborted; the interrupted job is re-queued for the next start")
        return EXIT_INTERRUPTED
    if args.once and summary.failed:
        return EXIT_JOB_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- batch on Ray


def _cmd_batch(args: argparse.Namespace) -> int:
    from ..distributed import require_ray

    require_ray()  # exit 2 with the install hint before anything else happens
    _setup_console_logging(args.verbose, through_tqdm=True)
    from ..distributed.batch import run_batch
    from ..engine import load_plan_file, load_ruleset

    if args.rules:
        load_ruleset(Path(args.rules))  # invalid rules fail here, once, not on every worker
    specs = [spec for plan in args.plans for spec in load_plan_file(Path(plan))]
    executor = _load_callable(args.executor) if args.executor else None
    with stop_on_signals(_announce_stop("stopping the batch")) as stop:
        result = run_batch(specs, rules=Path(args.rules) if args.rules else None, executor=executor,
                           address=args.ray or None, max_retries=args.retries,
                           failed_dir=Path(args.failed) if args.failed else None, benchmark_cache=args.benchmark_cache,
                           cpus_per_task=args.cpus_per_task, cancel=stop.is_set)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        for clip in result.clips:
            where = f"{clip.placement.get('host', '?')} GPU {','.join(clip.placement.get('gpu_ids') or []) or '-'}"
            if clip.status == "ok":
                print(f"ok      {clip.name} -> {clip.output} ({clip.seconds:.1f} s on {where})")
            else:
                message = (clip.error or {}).get("message", clip.status)
                print(f"{clip.status:<8}{clip.name}: {message}" + (f" -> {clip.error_file}" if clip.error_file else ""))
        print(f"{len(result.ok)}/{len(result.clips)} clips in {result.seconds:.1f} s ({result.clips_per_second:.3f} clips/s)")
        if any("sync" in (spec.evaluate or []) for spec in specs):
            print()
            print(batch_sync_table(result.clips))
    return result.exit_code


def batch_sync_table(clips: Sequence[Any]) -> str:
    """The sync scores of a batch's clips (their reports' `evaluation.sync`), one line per clip."""
    from ..quality.report import report_sync_rows, sync_table

    return "sync scores (StableSyncNet, docs/quality.md):\n" + sync_table(
        report_sync_rows([(clip.name, clip.report) for clip in clips]))


# --------------------------------------------------------------------------- fetch-weights


def _cmd_warmup(args: argparse.Namespace) -> int:
    _setup_console_logging(args.verbose, through_tqdm=True)
    from ..engine import load_ruleset
    from ..errors import InvalidInputError
    from ..warmup import WARMUP_GOALS, format_results, warm_up

    goals = [g.strip() for g in args.goals.split(",") if g.strip()]
    unknown = [g for g in goals if g not in WARMUP_GOALS]
    if unknown or not goals:
        raise InvalidInputError(f"--goals: unknown goal(s) {', '.join(unknown) or '(none given)'}",
                                hint="choose from " + ", ".join(WARMUP_GOALS))
    options = None
    overrides = None
    if args.tiny:
        from ..bench.core import BenchmarkOptions

        options = BenchmarkOptions.tiny()
        overrides = {"steps": 2, "chunk_frames": 2, "frames_per_batch": 2}
    progress = TqdmProgress("warmup", position=0)
    try:
        results = warm_up(args.weights, goals=tuple(goals),
                          variants=(args.only,) if args.only else ("eager", "compiled"),
                          ruleset=load_ruleset(Path(args.rules) if args.rules else None),
                          benchmark_cache=args.benchmark_cache, options=options, overrides=overrides,
                          progress=progress)
    finally:
        progress.close()
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_results(results))
    return EXIT_OK if all(r.status != "failed" for r in results) else EXIT_JOB_FAILED


def _cmd_fetch_weights(args: argparse.Namespace) -> int:
    _setup_console_logging(args.verbose)
    from ..weights import fetch_weights  # lazily: huggingface_hub is an optional extra

    fetch_weights(Path(args.dir))
    print(f"weights ready in {args.dir}")
    return EXIT_OK


# --------------------------------------------------------------------------- bundled example


def _cmd_example(args: argparse.Namespace) -> int:
    """Copy a bundled example plan and its assets into --out, then run it like `latentsync-run PLAN`."""
    import shutil

    from ..errors import InvalidInputError
    from ..paths import examples_dir

    source = examples_dir()
    plan = source / f"{args.name}.yaml"
    if not plan.is_file() or not (source / "assets").is_dir():
        raise InvalidInputError(f"the bundled example {args.name!r} is not installed (looked in {source})",
                                hint="reinstall latentsync-runner, or run a plan of your own")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plan, out / plan.name)
    shutil.copytree(source / "assets", out / "assets", dirs_exist_ok=True)
    print(f"example {args.name}: {out / plan.name} (outputs go to {out / 'out'})", file=sys.stderr)
    args.plan = str(out / plan.name)
    return _cmd_run(args)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="latentsync-run", description=TOP_DESCRIPTION, epilog=EXIT_CODES_HELP,
                                     formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", metavar="{PLAN.yaml,watch,batch,fetch-weights,example}")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")

    run = commands.add_parser("run", help="run the jobs of a plan (the default: `latentsync-run PLAN.yaml`)",
                              description="Run the job(s) of a plan.yaml.", epilog=EXIT_CODES_HELP, formatter_class=formatter)
    run.add_argument("plan", metavar="PLAN.yaml", help="one job or a list of jobs (schemas/plan.schema.json)")
    run.add_argument("--dry-run", action="store_true", help="print the explained run plan of each job and exit")
    run.add_argument("--rules", metavar="DIR", help="rules folder (default: the bundled rules/v1)")
    run.add_argument("--json", action="store_true", help="print results (or, with --dry-run, run plans) as JSON on stdout")
    run.add_argument("--contact-sheet", action="store_true",
                     help="also write a PNG of input vs output lower-face crops beside each output")
    run.add_argument("--benchmark-cache", type=Path, metavar="FILE", help="measured timings from latentsync-bench")
    run.add_argument("--overwrite", action="store_true",
                     help="replace existing files at the output and report paths that this plan's earlier runs did "
                          "not write (inputs are never overwritten)")
    common(run)

    watch = commands.add_parser(
        "watch", help="watch a drop folder", formatter_class=formatter, epilog=EXIT_CODES_HELP,
        description=(
            "Watch INBOX for jobs and write lip-synced clips into OUTBOX.\n\n"
            "A job is clip.mp4 (+ clip.wav|mp3|m4a beside it, else the clip's own audio), or\n"
            "NAME.plan.yaml naming files beside it in INBOX (video:, audio:) plus overrides.\n"
            "Results: OUTBOX/clip.mp4 + clip.mp4.report.json; the inputs move to INBOX/done/.\n"
            "Failures: the inputs move to INBOX/failed/ with clip.error.json (what, why, how to fix).\n"
            "Work in progress: INBOX/processing/; journal: INBOX/.latentsync/journal.sqlite3;\n"
            "log: INBOX/logs/watch.log. Edits to the rules folder are picked up between jobs.\n"
            "Ctrl-C / SIGTERM: the current job stops at the next chunk and is re-queued."))
    watch.add_argument("inbox", metavar="INBOX")
    watch.add_argument("--out", required=True, metavar="OUTBOX", help="where finished clips are written")
    watch.add_argument("--rules", metavar="DIR", help="rules folder, hot-reloaded (default: the bundled rules/v1)")
    watch.add_argument("--poll", nargs="?", const=2.0, type=float, metavar="SECONDS",
                       help="poll instead of inotify (network drives); a file is ready when its size and "
                            "mtime hold still across polls (default interval 2 s)")
    watch.add_argument("--retries", type=int, default=2, metavar="N",
                       help="retry a job that failed transiently (memory, device) up to N more times (default 2)")
    watch.add_argument("--retry-delay", type=float, default=5.0, metavar="S", help="first retry backoff, doubling (default 5)")
    watch.add_argument("--once", action="store_true", help="process what is in INBOX now, then exit (cron, tests)")
    watch.add_argument("--pair-wait", type=float, default=5.0, metavar="S",
                       help="how long a finished video waits for its audio file to arrive (default 5)")
    watch.add_argument("--settle", type=float, default=1.0, metavar="S",
                       help="files found by a scan are ready once unchanged this long (default 1)")
    watch.add_argument("--weights", metavar="DIR", help="weights folder for every job (plans may not name one)")
    watch.add_argument("--goal", choices=("preview", "balanced", "quality", "auto"), help="goal for clips without a plan")
    watch.add_argument("--state", metavar="DIR", help="journal folder (default INBOX/.latentsync; use a local disk "
                                                     "when INBOX is on a network drive)")
    watch.add_argument("--benchmark-cache", type=Path, metavar="FILE", help="measured timings from latentsync-bench")
    watch.add_argument("--job-timeout", type=float, default=None, metavar="S",
                       help="cancel a job that runs longer than S seconds; it counts as a failed attempt "
                            "(default: no limit)")
    watch.add_argument("--stop-grace", type=float, default=10.0, metavar="S",
                       help="on Ctrl-C / SIGTERM, how long the running job has to stop before the watcher exits "
                            "anyway (the next start counts that attempt; default 10)")
    watch.add_argument("--executor", metavar="MODULE:CALLABLE",
                       help="advanced: call this instead of latentsync.runner.run_job (same signature); "
                            "MODULE:FACTORY() calls a factory once")
    watch.add_argument("--rules-loader", metavar="MODULE:CALLABLE", help=argparse.SUPPRESS)
    watch.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="run the jobs on a Ray cluster, one per GPU at a time (ADDRESS: auto, HOST:6379 or "
                            "ray://HOST:10001; none: RAY_ADDRESS or a local Ray); INBOX and OUTBOX must be shared storage")
    watch.add_argument("--cpus-per-task", type=float, default=1.0, metavar="N",
                       help="with --ray on a cluster without GPUs: CPUs per job (default 1)")
    common(watch)

    batch = commands.add_parser(
        "batch", help="run many plans on a Ray cluster", formatter_class=formatter, epilog=EXIT_CODES_HELP,
        description=(
            "Run the jobs of PLANS on a Ray cluster: one Ray task per clip, one GPU each (or\n"
            "--cpus-per-task CPUs without GPUs). Every worker resolves its own run plan from its own\n"
            "GPU with the rules shipped from here (no shared rules folder needed); inputs and outputs\n"
            "must be paths every node can read and write (shared storage). A clip that still fails\n"
            "after --retries retries gets FAILED/NAME.error.json; inputs are never moved.\n"
            "Needs the ray extra: pip install 'latentsync-runner[ray]'."))
    batch.add_argument("plans", nargs="+", metavar="PLAN.yaml")
    batch.add_argument("--ray", nargs="?", const="", default="", metavar="ADDRESS",
                       help="the cluster (auto, HOST:6379, ray://HOST:10001); none: RAY_ADDRESS or a local Ray")
    batch.add_argument("--rules", metavar="DIR", help="rules folder shipped to every task (default: the bundled rules/v1)")
    batch.add_argument("--retries", type=int, default=2, metavar="N",
                       help="Ray retries after a transient error or a dead worker (default 2)")
    batch.add_argument("--failed", metavar="DIR", help="where error reports go (default: failed/ beside each output)")
    batch.add_argument("--json", action="store_true", help="print the batch result as JSON on stdout")
    batch.add_argument("--benchmark-cache", type=Path, metavar="FILE", help="measured timings (a path every node can read)")
    batch.add_argument("--cpus-per-task", type=float, default=1.0, metavar="N", help="CPUs per clip on a cluster without GPUs")
    batch.add_argument("--executor", metavar="MODULE:CALLABLE", help=argparse.SUPPRESS)
    common(batch)

    fetch = commands.add_parser("fetch-weights", help="download the official weights into DIR",
                                description="Download the official LatentSync weights (official layout) into DIR.",
                                epilog=EXIT_CODES_HELP, formatter_class=formatter)
    fetch.add_argument("dir", metavar="DIR")
    common(fetch)

    example = commands.add_parser(
        "example", help="copy a bundled example into DIR and run it", formatter_class=formatter, epilog=EXIT_CODES_HELP,
        description=("Copy a bundled example (its plan, examples/assets/quickstart.mp4 and the speech track) into\n"
                     "DIR and run it: the whole pipeline with a small random-weight model (the lips are NOT\n"
                     "synced), on a CPU in about a minute. Works from an installed wheel as from a checkout.\n"
                     "Writes DIR/out/<name>_synced.mp4 and its .report.json."))
    example.add_argument("name", nargs="?", default="quickstart", choices=EXAMPLES,
                         help="quickstart (10 steps) or plan (the rules' own choice); default quickstart")
    example.add_argument("--out", default="latentsync-example", metavar="DIR",
                         help="where the example is copied and its outputs written (default ./latentsync-example)")
    example.add_argument("--dry-run", action="store_true", help="print the explained run plan and exit")
    example.add_argument("--json", action="store_true", help="print results (or, with --dry-run, run plans) as JSON")
    example.add_argument("--rules", metavar="DIR", help="rules folder (default: the bundled rules/v1)")
    example.set_defaults(contact_sheet=False, benchmark_cache=None)
    common(example)

    warmup = commands.add_parser(
        "warmup", help="build this machine's kernel and compile caches for the plans it will run",
        formatter_class=formatter, epilog=EXIT_CODES_HELP,
        description=("Run each goal's plans (the eager plan a short clip gets, and the compiled plan a long one\n"
                     "gets where the rules compile on this card) twice on a short in-memory clip, so Triton's\n"
                     "kernels and torch.compile's graphs land in the keyed cache (~/.cache/latentsync-runner/\n"
                     "compile/<card, torch and package versions>/). Later processes start warm, and the rules\n"
                     "compile shorter clips once the cache is warm (latentsync-rules explain shows\n"
                     "compile_saves_s_<goal>). A cold compile takes minutes per goal."))
    warmup.add_argument("--weights", default="random", metavar="DIR",
                        help="weights folder, or random (the official architecture; the shapes are what matter)")
    warmup.add_argument("--goals", default="quality,balanced,preview", metavar="G[,G]",
                        help="goals to warm (default quality,balanced,preview)")
    warmup.add_argument("--only", choices=("eager", "compiled"), help="warm only these plans")
    warmup.add_argument("--rules", metavar="DIR", help="rules folder (default: the bundled rules/v1)")
    warmup.add_argument("--benchmark-cache", type=Path, metavar="FILE", help="measured timings from latentsync-bench")
    warmup.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    warmup.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke runs: small clip, 2 steps
    common(warmup)
    return parser


def _announce_stop(action: str) -> Callable[[int], None]:
    """For `stop_on_signals`: the first SIGINT/SIGTERM says what happens now; a second aborts at once."""

    def announce(signum: int) -> None:
        logger.warning("{}: {} (again to abort now)", signal_name(signum), action)

    return announce


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help"):
        arguments = ["run"] + arguments  # `latentsync-run PLAN.yaml` is the default command
    parser = build_parser()
    if not arguments:
        parser.print_help(sys.stderr)
        return EXIT_INVALID_INPUT
    args = parser.parse_args(arguments)
    handlers = {"run": _cmd_run, "watch": _cmd_watch, "batch": _cmd_batch, "fetch-weights": _cmd_fetch_weights,
                "example": _cmd_example, "warmup": _cmd_warmup}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 — one clear line, not a traceback
        return _print_error(error, getattr(args, "verbose", False))


if __name__ == "__main__":
    sys.exit(main())
