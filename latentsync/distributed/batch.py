"""The batch driver: many clips, one Ray task each, one progress bar, failures into failed/."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from loguru import logger

from ..atomic import atomic_write_json
from ..errors import InvalidInputError
from ..failures import lost_worker_record
from ..output_safety import check_outputs
from ..jobs import JobReport, JobSpec
from .bundle import RulesBundle, pack_rules
from .ray_support import TaskResources, connect, task_resources
from .tasks import TransientClipError, make_progress_actor, run_clip


@dataclass
class ClipResult:
    """One clip of a batch, as the driver saw it end."""

    name: str
    output: str
    status: str  # "ok" | "failed" | "cancelled"
    report: Optional[dict[str, Any]] = None
    error: Optional[dict[str, Any]] = None
    error_file: Optional[str] = None
    placement: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # submit -> result, as the driver measured it

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class BatchResult:
    clips: list[ClipResult]
    seconds: float
    resources: dict[str, Any]

    @property
    def ok(self) -> list[ClipResult]:
        return [c for c in self.clips if c.status == "ok"]

    @property
    def failed(self) -> list[ClipResult]:
        return [c for c in self.clips if c.status == "failed"]

    @property
    def clips_per_second(self) -> float:
        return len(self.ok) / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 all ok, 2 a clip had invalid input, 1 another failure, 130 cancelled."""
        if any(c.status == "cancelled" for c in self.clips):
            return 130
        codes = [2 if c.error and c.error.get("exit_code") == 2 else 1 for c in self.failed]
        return max(codes, default=0)

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "clips_per_second": self.clips_per_second, "resources": self.resources,
                "ok": len(self.ok), "failed": len(self.failed), "clips": [c.to_dict() for c in self.clips]}


def clip_name(spec: JobSpec) -> str:
    return spec.name or Path(spec.video).stem


def _check_unique_outputs(specs: Sequence[JobSpec]) -> None:
    seen: dict[str, str] = {}
    for spec in specs:
        output = str(Path(spec.output).resolve())
        if output in seen:
            raise InvalidInputError(f"two jobs write the same output ({seen[output]} and {clip_name(spec)})",
                                    path=str(spec.output), hint="give every job its own `output:`")
        seen[output] = clip_name(spec)


def _unwrap(error: BaseException) -> BaseException:
    """Ray wraps a task's exception in RayTaskError; the original is its `cause`."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def _failure_record(error: BaseException, attempts: int) -> dict[str, Any]:
    original = _unwrap(error)
    if isinstance(original, TransientClipError) or isinstance(error, TransientClipError):
        record = (original if isinstance(original, TransientClipError) else error).record  # type: ignore[union-attr]
    else:
        record = lost_worker_record(original)  # killed, segfault, out of host memory, or its node lost
    record["attempts"] = attempts
    return record


def write_error_file(folder: Path, name: str, spec: JobSpec, record: dict[str, Any]) -> Path:
    """failed/NAME.error.json (NAME-2... when taken): what failed, why, how to fix. Inputs are never moved."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.error.json"
    index = 2
    while path.exists():
        path = folder / f"{name}-{index}.error.json"
        index += 1
    hint = record.get("hint") or ""
    if record.get("transient"):
        hint = (hint + " " if hint else "") + (f"It failed {record.get('attempts', 1)} time(s) with an error that may "
                                               "pass (memory, device, a lost worker); run the batch again for this clip.")
    document = {
        "job": name,
        "what_failed": "running the lip-sync pipeline on the Ray cluster",
        "why": record.get("message") if not record.get("path") else f"{Path(str(record['path'])).name}: {record['message']}",
        "how_to_fix": hint.strip() or "fix the input named above and run the batch again",
        "error": record,
        "spec": spec.to_dict(),
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(path, document, sort_keys=True)  # keys sorted, as the drop folder's error files
    return path


class _Bar:
    """One tqdm bar for the whole cluster, in clips; running clips count by their stage fraction."""

    def __init__(self, total: int, enabled: Optional[bool]):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="clips", unit="clip", file=sys.stderr, disable=True if enabled is False else (False if enabled else None),
                        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}] {postfix}")
        self.finished = 0

    def show(self, finished: int, partial: float, running: int, failed: int) -> None:
        value = min(float(self.bar.total), finished + partial)
        self.bar.n = round(value, 2)
        self.bar.set_postfix_str(f"in flight {running}, failed {failed}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run_batch(
    specs: Sequence[JobSpec],
    *,
    rules: Optional[Path] = None,
    executor: Optional[Callable[..., JobReport]] = None,
    rules_loader: Optional[Callable[..., Any]] = None,
    address: Optional[str] = None,
    max_retries: int = 2,
    failed_dir: Optional[Path] = None,
    benchmark_cache: Optional[Path] = None,
    cpus_per_task: float = 1.0,
    resources: Optional[TaskResources] = None,
    show_progress: Optional[bool] = None,
    cancel: Optional[Callable[[], bool]] = None,
    on_result: Optional[Callable[[ClipResult], None]] = None,
) -> BatchResult:
    """Run every spec as one Ray task (GPU: 1 each; else `cpus_per_task` CPUs) and wait for all.

    `rules`: the rules folder shipped to every task (default: the bundled rule set).
    `executor`: run_job's stand-in, pickled to the workers (default: run_job on the worker).
    Ray retries a task `max_retries` times after a transient error or a dead worker; a clip
    that still fails gets `failed_dir/NAME.error.json` (default: `failed/` beside its output).
    `show_progress`: True/False, or None for a bar only on a terminal.
    """
    specs = list(specs)
    _check_unique_outputs(specs)
    for spec in specs:
        # Outputs never overwrite an input or a file the job did not write (exit 2 before any task starts).
        check_outputs(spec)
    if rules is None:
        from ..paths import default_rules_dir

        rules = default_rules_dir()
    bundle: RulesBundle = pack_rules(Path(rules))
    ray = connect(address)
    resources = resources or task_resources(ray, cpus_per_task=cpus_per_task)
    remote = ray.remote(run_clip).options(
        **resources.options(), max_retries=max_retries, retry_exceptions=[TransientClipError], name="latentsync-clip")
    progress_actor = make_progress_actor(ray)
    bundle_ref = ray.put(bundle)  # one copy in the object store, shared by every task
    started = time.perf_counter()
    logger.info("batch: {} clip(s) on Ray, {} at a time ({} GPU / {} CPU per clip), rules {} {}", len(specs),
                resources.slots, resources.num_gpus, resources.num_cpus, bundle.name, bundle.digest[:12])
    pending: dict[Any, tuple[int, JobSpec, float]] = {}
    for index, spec in enumerate(specs):
        key = f"{index:05d}-{clip_name(spec)}"
        ref = remote.remote(key, spec.to_dict(), bundle_ref, executor, progress_actor,
                            str(benchmark_cache) if benchmark_cache else None, rules_loader)
        pending[ref] = (index, spec, time.perf_counter())
    results: list[Optional[ClipResult]] = [None] * len(specs)
    bar = _Bar(len(specs), show_progress)
    cancel_sent = False
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                index, spec, submitted = pending.pop(ref)
                result = _collect(ray, ref, spec, max_retries, failed_dir)
                result.seconds = time.perf_counter() - submitted
                results[index] = result
                if on_result is not None:
                    on_result(result)
                if result.status == "failed":
                    logger.error("{} failed: {} -> {}", result.name, result.error.get("message") if result.error else "?",
                                 result.error_file)
                else:
                    logger.info("{} {} on {} GPU {} ({:.1f} s)", result.name, result.status,
                                result.placement.get("host"), result.placement.get("gpu_ids") or "-", result.seconds)
            if cancel is not None and not cancel_sent and cancel():
                cancel_sent = True
                progress_actor.request_cancel.remote()
                logger.warning("stopping: running clips stop after their current chunk; queued clips are cancelled")
                for ref in list(pending):
                    ray.cancel(ref, force=False)
            done = [r for r in results if r is not None]
            snapshot = ray.get(progress_actor.snapshot.remote())
            finished_keys = {f"{i:05d}-{r.name}" for i, r in enumerate(results) if r is not None}
            partial = sum(min(d / t, 0.99) for k, (_s, d, t) in snapshot.items() if t and k not in finished_keys)
            bar.show(len(done), partial, len(pending), sum(1 for r in done if r.status == "failed"))
    finally:
        bar.close()
        ray.kill(progress_actor)
    elapsed = time.perf_counter() - started
    clips = [r for r in results if r is not None]
    return BatchResult(clips=clips, seconds=elapsed,
                       resources={"num_gpus": resources.num_gpus, "num_cpus": resources.num_cpus, "slots": resources.slots,
                                  "cluster": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}})


def _collect(ray: Any, ref: Any, spec: JobSpec, max_retries: int, failed_dir: Optional[Path]) -> ClipResult:
    name = clip_name(spec)
    try:
        value = ray.get(ref)
    except Exception as error:  # noqa: BLE001 — out of retries (transient error or dead worker), or cancelled
        if type(error).__name__ in ("TaskCancelledError",):
            return ClipResult(name=name, output=str(spec.output), status="cancelled")
        value = {"status": "failed", "error": _failure_record(error, attempts=max_retries + 1)}
    if value["status"] == "failed":
        record = value["error"]
        record.setdefault("attempts", 1)
        record["exit_code"] = 1 if record.get("transient", True) else 2
        folder = Path(failed_dir) if failed_dir is not None else Path(spec.output).parent / "failed"
        error_file = write_error_file(folder, name, spec, record)
        return ClipResult(name=name, output=str(spec.output), status="failed", error=record, error_file=str(error_file),
                          placement=value.get("placement") or record.get("placement") or {})
    return ClipResult(name=name, output=str(spec.output), status=value["status"], report=value.get("report"),
                      placement=value.get("placement") or {})
