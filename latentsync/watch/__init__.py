"""The watched drop folder: `latentsync-run watch INBOX --out OUTBOX`.

Importing this package is cheap (no torch, no watchdog until a watcher starts).
"""
from ..failures import classify_error  # re-exported: it used to live in the watcher
from .discovery import DropFolderError, DropPlan, classify, parse_drop_plan
from .journal import Journal, JobRow
from .rules_reload import RulesReloader
from .watcher import WatchConfig, Watcher, WatchFolderBusy, WatchSummary

__all__ = [
    "DropFolderError",
    "DropPlan",
    "Journal",
    "JobRow",
    "RulesReloader",
    "WatchConfig",
    "WatchFolderBusy",
    "WatchSummary",
    "Watcher",
    "classify",
    "classify_error",
    "parse_drop_plan",
]
