"""Errors a user can act on. Each names what was wrong and where.

Exit codes for CLIs: 0 ok, 1 a job failed, 2 invalid input (plan, rules, files).
"""
from __future__ import annotations


class LatentSyncError(Exception):
    """Base class. `hint` says how to fix it; `path` names the file at fault."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.hint = hint
        text = message if path is None else f"{path}: {message}"
        if hint:
            text = f"{text}\n  hint: {hint}"
        super().__init__(text)

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "message": self.message, "path": self.path, "hint": self.hint}


class InvalidInputError(LatentSyncError):
    """Bad plan, bad rules, missing or unreadable input files. Exit code 2."""

    exit_code = 2


class CheckpointError(InvalidInputError):
    """A checkpoint is missing, truncated, corrupt or of the wrong version."""


class MediaError(InvalidInputError):
    """A video or audio input cannot be decoded or holds no frames/samples."""


class OutputError(LatentSyncError):
    """The output cannot be written (unwritable folder, full disk)."""

    exit_code = 2


class OutOfMemoryError(LatentSyncError):
    """The device ran out of memory and the fallback ladder was exhausted."""
