"""Hot reload of the rules folder: debounce, validate -> compile -> swap, keep the last good set.

Editors save by writing a temporary file and renaming it over the old one, and
`git pull` touches several files in a burst, so a reload waits until the folder
has been quiet for `debounce` seconds. The watcher calls `maybe_reload` between
jobs only, so a running job never sees its rules change under it. A fingerprint
of the folder (names, sizes, mtimes) is also compared every few seconds, which
catches changes a filesystem event missed (network drives, a replaced folder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

from loguru import logger

RulesLoader = Callable[[Optional[Path]], Any]


def default_rules_loader(path: Optional[Path]) -> Any:
    """Load, validate and prove a rules folder: it must resolve a plan for every GPU profile and pass
    its own policy tests (`tests/*.yaml`) before a watcher uses it (RulesError otherwise)."""
    from ..engine import load_ruleset  # lazily: the engine pulls in durable_rules
    from ..engine.policy_tests import prove_rules

    ruleset = load_ruleset(path)
    try:
        prove_rules(ruleset)
    except BaseException:
        _close(ruleset)
        raise
    return ruleset


def rules_fingerprint(path: Optional[Path]) -> tuple:
    """Names, sizes and mtimes of every file under the rules folder (hidden files skipped)."""
    if path is None or not Path(path).is_dir():
        return ()
    entries = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            try:
                info = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), info.st_size, info.st_mtime_ns))
    return tuple(entries)


def _close(ruleset: Any) -> None:
    close = getattr(ruleset, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 — freeing early is an optimisation; GC frees it anyway
            logger.opt(exception=True).debug("closing an old rule set failed")


def describe_rules(ruleset: Any) -> str:
    version = getattr(ruleset, "version", None)
    digest = getattr(ruleset, "hash", None)
    return f"version {version} hash {str(digest)[:12] if digest else None}"


class RulesReloader:
    """Holds the rule set in force and swaps in a new one only when it loads cleanly."""

    def __init__(self, path: Optional[Path], loader: RulesLoader, *, debounce: float = 0.5, check_interval: float = 2.0):
        self.path = Path(path) if path is not None else None
        self.loader = loader
        self.debounce = debounce
        self.check_interval = check_interval
        self.current: Any = None
        self.last_error: Optional[BaseException] = None
        self.reloads = 0  # successful swaps after the first load
        self.rejected = 0  # invalid edits kept out
        self._dirty_since: Optional[float] = None
        self._last_event: float = 0.0
        self._last_check: float = 0.0
        self._fingerprint: tuple = ()

    @property
    def version(self) -> Optional[str]:
        return getattr(self.current, "version", None)

    @property
    def hash(self) -> Optional[str]:
        return getattr(self.current, "hash", None)

    def load_initial(self) -> Any:
        """Load at start-up; an invalid rules folder here is fatal (raises)."""
        self._fingerprint = rules_fingerprint(self.path)
        self.current = self.loader(self.path)
        logger.info("rules loaded from {}: {}", self.path or "the bundled default", describe_rules(self.current))
        return self.current

    def notify(self, now: float) -> None:
        """A filesystem event touched the rules folder."""
        if self._dirty_since is None:
            self._dirty_since = now
        self._last_event = now

    def maybe_reload(self, now: float) -> bool:
        """Between jobs: reload once the folder has been quiet for `debounce` s. True when rules were swapped."""
        if now - self._last_check >= self.check_interval:
            self._last_check = now
            fingerprint = rules_fingerprint(self.path)
            if fingerprint != self._fingerprint:
                self.notify(now)
        if self._dirty_since is None or now - self._last_event < self.debounce:
            return False
        self._dirty_since = None
        self._fingerprint = rules_fingerprint(self.path)
        try:
            candidate = self.loader(self.path)
        except Exception as error:  # noqa: BLE001 — any failure (invalid, unprovable) keeps the last good rules
            self.last_error = error
            self.rejected += 1
            logger.error(
                "rules edit in {} rejected; keeping {}:\n{}", self.path, describe_rules(self.current), error
            )
            return False
        self.last_error = None
        if getattr(candidate, "hash", object()) == self.hash and self.hash is not None:
            logger.debug("rules folder touched, content unchanged ({})", describe_rules(candidate))
            _close(candidate)
            return False
        previous = describe_rules(self.current)
        # Swapped between jobs only, so nothing still uses the old set: free its compiled rules now.
        old, self.current = self.current, candidate
        _close(old)
        self.reloads += 1
        logger.info("rules reloaded: {} (was {})", describe_rules(candidate), previous)
        return True
