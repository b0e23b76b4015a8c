"""What runs on a Ray worker: one clip, its own GPU facts, the driver's rules.

`run_clip` is a plain function; the driver wraps it with `ray.remote(...)`.
It returns a plain dict (no custom classes cross the wire except
`TransientClipError`, which Ray retries):

    {"status": "ok", "report": {...}, "placement": {...}}
    {"status": "failed", "error": {...}, "placement": {...}}     permanent: no retry
    {"status": "cancelled", "placement": {...}}
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional

from loguru import logger

from ..atomic import atomic_write_json
from ..failures import CANCEL, PERMANENT, TRANSIENT, classify_error, error_record
from ..jobs import JobReport, JobSpec
from ..output_safety import check_outputs
from .bundle import RulesBundle, unpack_rules

# One unpacked + loaded rule set per worker process and bundle digest (workers are reused).
_RULESETS: dict[tuple[str, Any], Any] = {}
_PROGRESS_INTERVAL = 0.5  # seconds between progress messages to the driver
_CANCEL_INTERVAL = 1.0  # seconds between asking the driver whether to stop


class TransientClipError(Exception):
    """A failure that may pass (memory, device, crash): Ray retries the task. args[0]: the error record as JSON."""

    def __init__(self, record_json: str):
        super().__init__(record_json)
        self.record_json = record_json

    @property
    def record(self) -> dict[str, Any]:
        return json.loads(self.record_json)

    def __str__(self) -> str:
        record = self.record
        return f"{record.get('type')}: {record.get('message')}"


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    data = dict(data)
    for key in ("video", "output", "audio", "report"):
        if data.get(key) is not None:
            data[key] = Path(data[key])
    return JobSpec(**data)


def placement() -> dict[str, Any]:
    """Which node, process and GPU ran this task."""
    info: dict[str, Any] = {"host": platform.node(), "pid": os.getpid()}
    try:
        import ray

        context = ray.get_runtime_context()
        info["node_id"] = context.get_node_id()
        info["node_ip"] = ray.util.get_node_ip_address()
        info["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        info["task_id"] = context.get_task_id()
    except Exception:  # noqa: BLE001 — called outside Ray (unit tests): the host is enough
        pass
    return info


def _load_ruleset(bundle: Optional[RulesBundle], rules_loader: Optional[Callable[..., Any]]) -> Any:
    if bundle is None:
        return None
    key = (bundle.digest, rules_loader)
    if key not in _RULESETS:
        if rules_loader is None:
            from ..engine import load_ruleset as rules_loader  # noqa: N813 — the default loader
        folder = unpack_rules(bundle)
        _RULESETS[key] = rules_loader(folder)
        logger.debug("rules {} unpacked into {}", bundle.digest[:12], folder)
    return _RULESETS[key]


class _RemoteProgress:
    """progress(stage, done, total) -> the driver's progress actor, throttled; cancel() asks it whether to stop."""

    def __init__(self, actor: Any, key: str):
        self.actor = actor
        self.key = key
        self._last_sent = 0.0
        self._last_asked = 0.0
        self._cancelled = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.actor is None or (now - self._last_sent < _PROGRESS_INTERVAL and done < total):
            return
        self._last_sent = now
        self.actor.update.remote(self.key, stage, done, total)  # fire and forget

    def cancel(self) -> bool:
        now = time.monotonic()
        if self.actor is not None and not self._cancelled and now - self._last_asked >= _CANCEL_INTERVAL:
            import ray

            self._last_asked = now
            self._cancelled = bool(ray.get(self.actor.cancelled.remote()))
        return self._cancelled


def run_clip(
    key: str,
    spec_data: dict[str, Any],
    rules: Optional[RulesBundle],
    executor: Optional[Callable[..., JobReport]] = None,
    progress_actor: Any = None,
    benchmark_cache: Optional[str] = None,
    rules_loader: Optional[Callable[..., Any]] = None,
) -> dict[str, Any]:
    """Run one clip on this worker; the plan is resolved here, from this worker's GPU."""
    where = placement()
    progress = _RemoteProgress(progress_actor, key)
    try:
        spec = spec_from_dict(spec_data)
        check_outputs(spec)  # again on the worker: the files may have changed since the driver looked
        ruleset = _load_ruleset(rules, rules_loader)
        if executor is None:
            from ..runner import run_job as executor
        report = executor(spec, ruleset=ruleset, progress=progress, cancel=progress.cancel,
                          benchmark_cache=Path(benchmark_cache) if benchmark_cache else None)
    except Exception as error:  # noqa: BLE001 — sorted into retry / fail / cancel below
        verdict = classify_error(error)
        if verdict == CANCEL:
            return {"status": "cancelled", "placement": where}
        record = error_record(error, transient=verdict == TRANSIENT)
        record["placement"] = where
        if verdict == PERMANENT:
            return {"status": "failed", "error": record, "placement": where}
        logger.warning("clip {} failed on {} ({}: {}); Ray may retry it", key, where.get("host"), record["type"],
                       record["message"])
        raise TransientClipError(json.dumps(record, default=str)) from None
    data = report.to_dict()
    data["host"] = data.get("host") or where["host"]
    data.setdefault("stats", {})
    data["stats"] = dict(data["stats"] or {}, ray=where)
    _rewrite_report(spec, data)
    return {"status": "ok", "report": data, "placement": where}


def _rewrite_report(spec: JobSpec, data: dict[str, Any]) -> None:
    """The report beside the output also says which Ray node and GPU ran the clip."""
    from ..runner import report_path_for

    path = report_path_for(spec)
    if path.is_file():
        atomic_write_json(path, data)


def make_progress_actor(ray: Any) -> Any:
    """A tiny actor the workers report to; the driver reads it for one cluster-wide bar."""

    @ray.remote(num_cpus=0)
    class ClusterProgress:
        def __init__(self) -> None:
            self.state: dict[str, tuple[str, int, int]] = {}
            self.stop = False

        def update(self, key: str, stage: str, done: int, total: int) -> None:
            self.state[key] = (stage, done, total)

        def snapshot(self) -> dict[str, tuple[str, int, int]]:
            return dict(self.state)

        def request_cancel(self) -> None:
            self.stop = True

        def cancelled(self) -> bool:
            return self.stop

    return ClusterProgress.remote()
