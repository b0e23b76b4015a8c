"""What a failed job says about itself, and whether trying again can help.

The drop-folder watcher, the Ray batch driver and the Ray tasks all record a
failure the same way: `error_record` turns any exception into the dict that
goes into the journal, `failed/NAME.error.json` and a Ray task's result, and
`classify_error` applies the runner's error contract (cancel, permanent,
transient).
"""
from __future__ import annotations

import errno
from datetime import datetime, timezone
from typing import Any, Optional

from .errors import InvalidInputError, LatentSyncError

CANCEL, PERMANENT, TRANSIENT = "cancel", "permanent", "transient"

LOST_WORKER_HINT = "the worker process died; check `ray logs` on its node"


def now_iso() -> str:
    """UTC, to the second: when a failure happened, as error records carry it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# OSError numbers that say a name or a link is wrong: the same path fails the same way every time.
PERMANENT_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EILSEQ, errno.ENOTDIR, errno.EISDIR}

# What to do about an OSError, by its number (permanent ones first).
_ERRNO_HINTS = {
    errno.ENAMETOOLONG: "a file name or path is too long for the file system (most allow 255 bytes per name); "
                        "rename the file to a shorter name and try again",
    errno.ELOOP: "a symbolic link leads back to itself (a link loop) or through too many links; use the file itself",
    errno.EILSEQ: "a file name is not valid text for this file system; rename the file (letters, digits, - _ .)",
    errno.ENOTDIR: "a path goes through something that is not a folder; check the paths",
    errno.EISDIR: "a path names a folder where a file is needed; check the paths",
    errno.ENOSPC: "the disk is full; free some space (this is retried)",
    errno.EDQUOT: "the disk quota is exhausted; free some space (this is retried)",
    errno.EACCES: "permission denied; check who may read and write the folders involved",
    errno.EPERM: "operation not permitted; check the permissions of the folders involved",
    errno.EROFS: "the file system is read-only; make the folder writable again",
    errno.EIO: "the disk or network share reported an I/O error (this is retried)",
}


def _is_bad_name(error: BaseException) -> bool:
    """A file name Python or the OS cannot use: not encodable, or with a NUL byte in it."""
    if isinstance(error, UnicodeError):
        return True
    return isinstance(error, ValueError) and "null byte" in str(error)


def classify_error(error: BaseException) -> str:
    """'cancel' | 'permanent' | 'transient' (the runner's error contract).

    Cancelled: the job was asked to stop (not a failure). Permanent: the input or the
    plan is wrong, another attempt fails the same way (bad input, a file name that is too
    long or not text, a link loop). Transient: anything else (out of memory, output not
    writable, a full disk, a device error, an unexpected exception).
    """
    from .runner import JobCancelled  # lazily: the runner imports torch

    if isinstance(error, JobCancelled):
        return CANCEL
    if isinstance(error, (InvalidInputError, NotImplementedError)):
        return PERMANENT
    if isinstance(error, OSError) and error.errno in PERMANENT_ERRNOS:
        return PERMANENT
    if _is_bad_name(error):
        return PERMANENT
    return TRANSIENT  # OutOfMemoryError, OutputError, anything unexpected


def hint_for(error: BaseException) -> Optional[str]:
    """How to fix an error that carries no hint of its own (OS errors, bad names), or None."""
    if isinstance(error, LatentSyncError):
        return error.hint
    if isinstance(error, OSError) and error.errno in _ERRNO_HINTS:
        return _ERRNO_HINTS[error.errno]
    if _is_bad_name(error):
        return "a file name is not valid text (or holds a NUL byte); rename the file (letters, digits, - _ .)"
    return None


def error_record(error: BaseException, *, transient: Optional[bool] = None, stage: Optional[str] = None,
                 attempt: Optional[int] = None, at: Optional[str] = None) -> dict[str, Any]:
    """`type`, `message`, `path`, `hint` of any exception, plus whichever of `stage`,
    `attempt`, `transient` and `at` (a timestamp; `now_iso()`) are given."""
    if isinstance(error, LatentSyncError):
        record = error.to_dict()
    else:
        path = getattr(error, "filename", None) if isinstance(error, OSError) else None
        message = (error.strerror or str(error)) if isinstance(error, OSError) and error.strerror else str(error)
        record = {"type": type(error).__name__, "message": message or type(error).__name__,
                  "path": _printable(path) if path is not None else None, "hint": hint_for(error)}
    extra = {"stage": stage, "attempt": attempt, "transient": transient, "at": at}
    record.update({key: value for key, value in extra.items() if value is not None})
    return record


def lost_worker_record(error: BaseException) -> dict[str, Any]:
    """A Ray task that did not return: its worker died (killed, segfault, out of host memory)
    or its node was lost. Only the first line of Ray's long message is kept."""
    text = str(error).strip()
    return {"type": type(error).__name__, "message": text.splitlines()[0] if text else type(error).__name__,
            "path": None, "hint": LOST_WORKER_HINT, "transient": True}


def _printable(value: Any) -> str:
    """A path as text that any JSON reader and terminal take: undecodable bytes and control characters escaped."""
    import os

    text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
