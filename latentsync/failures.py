"""What a failed job says about itself, and whether trying again can help.

The drop-folder watcher, the Ray batch driver and the Ray tasks all record a
failure the same way: `error_record` turns any exception into the dict that
goes into the journal, `failed/NAME.error.json` and a Ray task's result, and
`classify_error` applies the runner's error contract (cancel, permanent,
transient).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .errors import InvalidInputError, LatentSyncError

CANCEL, PERMANENT, TRANSIENT = "cancel", "permanent", "transient"

LOST_WORKER_HINT = "the worker process died; check `ray logs` on its node"


def now_iso() -> str:
    """UTC, to the second: when a failure happened, as error records carry it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def classify_error(error: BaseException) -> str:
    """'cancel' | 'permanent' | 'transient' (the runner's error contract).

    Cancelled: the job was asked to stop (not a failure). Permanent: the input or the
    plan is wrong, another attempt fails the same way. Transient: anything else
    (out of memory, output not writable, a device error, an unexpected exception).
    """
    from .runner import JobCancelled  # lazily: the runner imports torch

    if isinstance(error, JobCancelled):
        return CANCEL
    if isinstance(error, (InvalidInputError, NotImplementedError)):
        return PERMANENT
    return TRANSIENT  # OutOfMemoryError, OutputError, anything unexpected


def error_record(error: BaseException, *, transient: Optional[bool] = None, stage: Optional[str] = None,
                 attempt: Optional[int] = None, at: Optional[str] = None) -> dict[str, Any]:
    """`type`, `message`, `path`, `hint` of any exception, plus whichever of `stage`,
    `attempt`, `transient` and `at` (a timestamp; `now_iso()`) are given."""
    if isinstance(error, LatentSyncError):
        record = error.to_dict()
    else:
        record = {"type": type(error).__name__, "message": str(error) or type(error).__name__, "path": None,
                  "hint": None}
    extra = {"stage": stage, "attempt": attempt, "transient": transient, "at": at}
    record.update({key: value for key, value in extra.items() if value is not None})
    return record


def lost_worker_record(error: BaseException) -> dict[str, Any]:
    """A Ray task that did not return: its worker died (killed, segfault, out of host memory)
    or its node was lost. Only the first line of Ray's long message is kept."""
    text = str(error).strip()
    return {"type": type(error).__name__, "message": text.splitlines()[0] if text else type(error).__name__,
            "path": None, "hint": LOST_WORKER_HINT, "transient": True}
