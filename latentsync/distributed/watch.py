"""The drop-folder watcher with its jobs on a Ray cluster: `latentsync-run watch ... --ray [ADDRESS]`.

The journal stays the source of truth. A queued job is marked `running` in the
journal and submitted as one Ray task (several at once, one per GPU slot); its
output goes to a Ray staging folder on the shared OUTBOX. When the task ends,
the base watcher's own `_run_one` replays the result through an executor that
only moves the staged files (or re-raises the task's error), so retries,
backoff, failed/ with its error file, the moves into OUTBOX and done/ are
exactly the single-machine watcher's. A job runs again only if the journal
says so; a watcher that dies with jobs on the cluster re-queues them on restart
(its recovery), and their staged outputs are discarded.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from loguru import logger

from ..atomic import is_partial_name
from ..errors import LatentSyncError
from ..failures import lost_worker_record
from ..jobs import JobReport, JobSpec
from ..watch.journal import JobRow
from ..watch.watcher import WatchConfig, Watcher
from .bundle import pack_rules
from .ray_support import TaskResources, connect, task_resources
from .tasks import TransientClipError, make_progress_actor, run_clip


class ClusterTaskFailed(LatentSyncError):
    """A Ray task that raised or whose worker died; the record is the worker's."""

    def __init__(self, record: dict[str, Any]):
        super().__init__(record.get("message") or record.get("type") or "task failed", path=record.get("path"),
                         hint=record.get("hint"))
        self.record = record


class PermanentClusterFailure(ClusterTaskFailed):
    """The worker judged the input invalid (no retry)."""


@dataclass
class _InFlight:
    row: JobRow
    attempt: int
    spec: JobSpec
    stage_dir: Path


class RayWatcher(Watcher):
    """`Watcher` whose pipeline runs as Ray tasks, up to one per GPU (or CPU slot) of the cluster at a time."""

    def __init__(self, config: WatchConfig, *, address: Optional[str] = None, executor: Optional[Callable[..., JobReport]] = None,
                 rules_loader: Any = None, task_rules_loader: Optional[Callable[..., Any]] = None,
                 resources: Optional[TaskResources] = None, cpus_per_task: float = 1.0):
        super().__init__(config, rules_loader=rules_loader)
        self.ray = connect(address)
        self.resources = resources or task_resources(self.ray, cpus_per_task=cpus_per_task)
        self.task_executor = executor  # shipped to the workers; None: run_job there
        self.task_rules_loader = task_rules_loader
        # Ray's own retries are off: the journal counts attempts and decides on retries.
        self._remote = self.ray.remote(run_clip).options(**self.resources.options(), max_retries=0,
                                                         retry_exceptions=False, name="latentsync-watch-job")
        self._progress = make_progress_actor(self.ray)
        self._in_flight: dict[Any, _InFlight] = {}
        self._bundles: dict[str, Any] = {}

    # ------------------------------------------------------------------ dispatch

    def _rules_ref(self) -> Any:
        folder = self.rules.path
        bundle = pack_rules(folder)  # re-read every submit: hot-reloaded edits reach the next job
        if bundle.digest not in self._bundles:
            self._bundles = {bundle.digest: self.ray.put(bundle)}
        return self._bundles[bundle.digest]

    def _run_one(self, row: JobRow) -> None:
        """Submit `row` to the cluster (waiting for a free slot first); its result is handled later."""
        while len(self._in_flight) >= self.resources.slots and not self.stopping:
            self._harvest(timeout=0.5)
        if self.stopping:
            return
        row = self.journal.get(row.id)
        if row.state != "queued":
            return  # the harvest above may have changed it
        attempt = row.attempts + 1
        stage_dir = self.staging_root / f"ray-{Path(row.claim_dir or str(row.id)).name}-a{attempt}"
        shutil.rmtree(stage_dir, ignore_errors=True)
        stage_dir.mkdir(parents=True, exist_ok=True)
        try:
            spec = self._build_spec(row, stage_dir)
            rules_ref = self._rules_ref()
        except Exception:  # noqa: BLE001 — the base path journals validation errors with their stage
            shutil.rmtree(stage_dir, ignore_errors=True)
            self._replay(row, attempt, _never_called)  # the base run raises the same error from _build_spec
            return
        self.journal.running(row.id, attempts=attempt, rules_version=self.rules.version, rules_hash=self.rules.hash)
        ref = self._remote.remote(f"job-{row.id}", spec.to_dict(), rules_ref, self.task_executor, self._progress,
                                  str(self.config.benchmark_cache) if self.config.benchmark_cache else None,
                                  self.task_rules_loader)
        self._in_flight[ref] = _InFlight(row=row, attempt=attempt, spec=spec, stage_dir=stage_dir)
        logger.info("job {} ({}): attempt {}/{} submitted to Ray ({} in flight)", row.id, row.name, attempt,
                    row.max_attempts, len(self._in_flight))

    def _discover_and_claim(self, now: float) -> bool:
        self._harvest(timeout=0)
        decided = super()._discover_and_claim(now)
        # Jobs on the cluster keep `--once` from returning early.
        return decided or bool(self._in_flight)

    def _harvest(self, timeout: float) -> None:
        if not self._in_flight:
            return
        ready, _ = self.ray.wait(list(self._in_flight), num_returns=len(self._in_flight), timeout=timeout)
        for ref in ready:
            entry = self._in_flight.pop(ref)
            try:
                value = self.ray.get(ref)
            except Exception as error:  # noqa: BLE001 — raised on the worker, or the worker died
                cause = getattr(error, "cause", None)
                if isinstance(cause, TransientClipError):
                    record = cause.record
                else:
                    record = lost_worker_record(error)
                value = {"status": "raised", "error": record}
            placement = value.get("placement") or (value.get("error") or {}).get("placement") or {}
            logger.info("job {} ({}): attempt {} ended on Ray ({}; host {}, GPU {})", entry.row.id, entry.row.name,
                        entry.attempt, value["status"], placement.get("host"), placement.get("gpu_ids") or "-")
            self._replay(entry.row, entry.attempt, self._replay_executor(entry, value))
            shutil.rmtree(entry.stage_dir, ignore_errors=True)

    def _replay_executor(self, entry: _InFlight, value: dict[str, Any]) -> Callable[..., JobReport]:
        """An executor for the base `_run_one` that hands over what the Ray task produced."""

        def replay(spec: JobSpec, **_kwargs: Any) -> JobReport:
            from ..runner import JobCancelled

            status = value["status"]
            if status == "cancelled":
                raise JobCancelled("cancelled on stop", path=str(spec.video))
            if status == "failed":
                raise _as_error(value["error"], permanent=True)
            if status == "raised":
                raise _as_error(value["error"], permanent=False)
            target = Path(spec.output).parent
            for item in sorted(entry.stage_dir.iterdir()):
                if not is_partial_name(item.name):
                    os.replace(item, target / item.name)
            data = dict(value["report"])
            return JobReport(**{k: data.get(k) for k in JobReport.__dataclass_fields__ if k in data})

        return replay

    def _replay(self, row: JobRow, attempt: int, executor: Callable[..., JobReport]) -> None:
        current = self.journal.get(row.id)
        current.attempts = attempt - 1  # the base run counts this attempt once more
        saved, self.executor = self.executor, executor
        try:
            super()._run_one(current)
        finally:
            self.executor = saved

    # ------------------------------------------------------------------ stop

    def run(self, *, once: bool = False):
        try:
            return super().run(once=once)
        finally:
            self._stop_in_flight()

    def _stop_in_flight(self) -> None:
        """Jobs still on the cluster stop at their next chunk; the journal keeps them `running`,
        so the next start re-queues them (recovery) and nothing is lost or run twice."""
        if not self._in_flight:
            return
        logger.warning("{} job(s) still on the cluster: asking them to stop; they are re-queued on the next start",
                       len(self._in_flight))
        self._progress.request_cancel.remote()
        for ref, entry in list(self._in_flight.items()):
            self.ray.cancel(ref, force=False)
        self.ray.wait(list(self._in_flight), num_returns=len(self._in_flight), timeout=30)
        for entry in self._in_flight.values():
            shutil.rmtree(entry.stage_dir, ignore_errors=True)
        self._in_flight.clear()


def _as_error(record: dict[str, Any], *, permanent: bool) -> Exception:
    """A worker's error record as an exception the watcher classifies the same way as a local one."""
    from ..errors import InvalidInputError

    if permanent:
        error: LatentSyncError = InvalidInputError(record.get("message") or "invalid input", path=record.get("path"),
                                                   hint=record.get("hint"))
    else:
        error = ClusterTaskFailed(record)
    return error


def _never_called(spec: JobSpec, **_kwargs: Any) -> JobReport:
    raise AssertionError(f"{spec.video}: the spec was invalid, the executor must not run")
