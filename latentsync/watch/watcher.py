"""The drop-folder watcher: INBOX in, OUTBOX out, a journal in between, nothing lost.

Life of a job (every arrow is committed to the journal before the file operation):

    INBOX/clip.mp4 (+ clip.wav)        ready: closed or moved in (inotify), or size and
        |  claim: rename               mtime stable across polls (--poll / start-up)
        v
    INBOX/processing/000042-clip/      queued -> running (pipeline writes into
        |                              OUTBOX/.staging/000042-clip/attempt-N/)
        +-- ok ------> OUTBOX/clip.mp4 + clip.mp4.report.json, inputs -> INBOX/done/
        +-- transient error, attempts left -> queued again (backoff)
        +-- permanent error or out of attempts -> INBOX/failed/clip.mp4 + clip.error.json

No single dropped item can crash, hang or stop the watcher ("poison pills"):

- every item's handling (naming, reading a plan, claiming, running, moving) is
  contained: whatever it raises ends that item in `failed/` (or, for a fault of the
  folders, waits and retries), never the watcher;
- a name that cannot be handled safely (not UTF-8, control characters) goes to
  `failed/` under a sanitized name; derived names are shortened to fit (`names.py`);
- plans are read with the engine's bounded loader; a plan being read is recorded in
  the journal first, so a watcher killed while reading it counts an attempt;
- the pipeline runs in a worker thread: the main thread keeps honouring stop signals
  (a job that does not stop within `stop_grace` seconds is left to the next start,
  which counts the attempt) and `job_timeout` bounds a job's time;
- a folder that becomes unwritable (OUTBOX, its staging, done/, failed/) is retried
  with backoff, not counted as an attempt; the clip is delivered once it is writable;
- one watcher owns an INBOX (a lock file in INBOX itself, whatever `--state` says),
  and a claim is a rename: a file another process took leaves the claim abandoned.

The watcher exits on its own only for a fault of its configuration found at start
(INBOX, OUTBOX, the state folder or the rules unusable): InvalidInputError, exit 2.

The pipeline is injectable (`executor`, `latentsync.runner.run_job` by default)
and so is the rules loader; fast fakes with the same interfaces stand in for
both in tests (latentsync.testing.fake_pipeline).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import queue
import re
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from loguru import logger

from ..atomic import atomic_write_json, is_partial_name
from ..errors import InvalidInputError, LatentSyncError
from ..failures import CANCEL, TRANSIENT, classify_error, error_record, now_iso
from ..jobs import JobReport, JobSpec
from ..signals import signal_name, stop_on_signals
from .discovery import (
    RESERVED_DIRS,
    DropFolderError,
    DropPlan,
    check_claimed_file,
    classify,
    file_problem,
    names_in_broken_plan,
    parse_drop_plan,
    read_plan_bytes,
    stem_of,
)
from .journal import ACTIVE_STATES, Journal, JobRow
from .names import display, fit, name_bytes, sanitized, unsafe_reason
from .rules_reload import RulesLoader, RulesReloader, default_rules_loader

Executor = Callable[..., JobReport]  # run_job's signature

# Room a name in OUTBOX keeps for what is appended to it (`.report.json`, `.contact.png`).
_OUTBOX_TAIL = len(".report.json")


def default_executor(spec: JobSpec, **kwargs: Any) -> JobReport:
    from ..runner import run_job  # lazily: the runner pulls in torch

    return run_job(spec, **kwargs)


class WatchFolderBusy(InvalidInputError):
    """Another watcher already holds this INBOX."""


class JobTimeout(LatentSyncError):
    """A job ran longer than --job-timeout (transient: retried while attempts are left)."""


class _JobStuck(Exception):
    """The pipeline did not return within the grace period after it was asked to stop."""


class _FolderUnavailable(Exception):
    """OUTBOX (or its staging folder) cannot be written right now: not the clip's fault."""


@dataclass
class WatchConfig:
    """How a watcher behaves; every duration is in seconds."""

    inbox: Path
    outbox: Path
    rules: Optional[Path] = None  # None: the bundled default rules
    poll: Optional[float] = None  # None: inotify events; a number: PollingObserver with this interval
    retries: int = 2  # extra attempts after a transient failure (3 attempts in all)
    retry_delay: float = 5.0  # first backoff; doubles per attempt
    retry_delay_max: float = 300.0
    # A video waits this long after it is complete for a companion audio file.
    # Both usually arrive in one copy operation, one file after the other; the
    # gap is the time to open the next file (ms locally, seconds on a busy share).
    # Guessing wrong would lip-sync to the wrong audio, waiting costs seconds on a
    # job of minutes. Any same-name file still being written also holds the video.
    pair_wait: float = 5.0
    settle: float = 1.0  # files found by a scan: ready when size and mtime stay put this long
    input_wait: float = 600.0  # a plan waits this long for inputs it names; lone audio for its video
    rules_debounce: float = 0.5
    rules_check_interval: float = 2.0
    rescan_interval: float = 5.0  # fallback listing of INBOX (catches anything an event missed)
    tick: float = 0.1
    weights: Optional[str] = None  # weights folder for every job (None: JobSpec's default)
    goal: Optional[str] = None
    benchmark_cache: Optional[Path] = None
    state_dir: Optional[Path] = None  # journal and lock; default INBOX/.latentsync
    log_file: bool = True  # rotating INBOX/logs/watch.log
    log_level: str = "INFO"
    job_timeout: Optional[float] = None  # a job running longer is cancelled and counted as a failed attempt
    stop_grace: float = 10.0  # after a stop request (or a timeout), how long the pipeline has to stop
    io_retry_max: float = 60.0  # longest wait between tries of a folder that cannot be written

    def __post_init__(self) -> None:
        self.inbox = Path(self.inbox)
        self.outbox = Path(self.outbox)
        if self.rules is not None:
            self.rules = Path(self.rules)
        if self.state_dir is not None:
            self.state_dir = Path(self.state_dir)


@dataclass
class WatchSummary:
    done: int = 0
    failed: int = 0
    retried: int = 0
    requeued: int = 0
    job_ids: list[int] = field(default_factory=list)


@dataclass
class _Tracked:
    """What the watcher knows about one top-level file in INBOX."""

    first_seen: float
    ready_at: Optional[float] = None
    need_close: bool = False  # inotify saw it being written: only a close (or move-in) makes it ready
    stat: Optional[tuple] = None
    stat_since: float = 0.0


@dataclass
class _Claim:
    kind: str  # "pair" | "plan"
    name: str
    files: list[str]
    output: str


@dataclass
class _Reject:
    name: str
    files: list[str]
    error: LatentSyncError
    what: str


def _safe_component(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "job"


def _suffixed(name: str, suffix: str) -> str:
    """`clip.mp4` -> `clip-2.mp4`, shortened to fit a file name when needed."""
    base = stem_of(name)
    return fit(base + suffix, name[len(base):])


def _safe_name(name: str) -> str:
    """The name a file may keep in done/ or failed/: itself, or a sanitized stand-in for an unsafe name."""
    return sanitized(name) if unsafe_reason(name) else name


def _error_dict(error: BaseException, *, stage: str, attempt: int, transient: bool) -> dict[str, Any]:
    """One attempt's failure as the journal and the error file keep it."""
    return error_record(error, stage=stage, attempt=attempt, transient=transient, at=now_iso())


def _writable(folder: Path) -> Optional[str]:
    """None when a file can be created in `folder`, else why not."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".latentsync-probe-", dir=folder)
    except OSError as error:
        return error.strerror or str(error)
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


_WHAT_FAILED = {
    "discovery": "checking the dropped files before claiming them",
    "validate": "checking the claimed files and the plan",
    "run": "running the lip-sync pipeline",
    "finish": "moving the finished output into OUTBOX",
    "recovery": "recovering after the watcher stopped",
    "rules": "resolving the settings from the drop folder's rules",
}
RULES_HINT = ("the drop folder's rules cannot resolve a plan for this clip; this is not the clip's fault: ask the "
              "operator to fix the rules (latentsync-rules validate / test), then drop the files again")


class Watcher:
    """Watches INBOX and runs one job at a time. `run()` blocks until stopped (or, with once=True, idle)."""

    def __init__(
        self,
        config: WatchConfig,
        *,
        executor: Optional[Executor] = None,
        rules_loader: Optional[RulesLoader] = None,
    ):
        self.config = config
        self.executor: Executor = executor or default_executor
        self.inbox = config.inbox.resolve()
        self.outbox = config.outbox.resolve()
        self.state_dir = (config.state_dir or self.inbox / ".latentsync").resolve()
        self.processing = self.inbox / "processing"
        self.done_dir = self.inbox / "done"
        self.failed_dir = self.inbox / "failed"
        self.logs_dir = self.inbox / "logs"
        self.staging_root = self.outbox / ".staging"
        rules_path = config.rules
        if rules_path is None:
            from ..paths import default_rules_dir

            rules_path = default_rules_dir()
        self.rules = RulesReloader(
            rules_path,
            rules_loader or default_rules_loader,
            debounce=config.rules_debounce,
            check_interval=config.rules_check_interval,
        )
        self.journal: Optional[Journal] = None
        self.summary = WatchSummary()
        self._events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._stop = threading.Event()
        self._tracked: dict[str, _Tracked] = {}
        self._plan_cache: dict[str, tuple[tuple, Any]] = {}
        self._warned: set[str] = set()
        self._lock_handles: list[Any] = []
        self._observer: Any = None
        self._log_sink: Optional[int] = None
        self._once = False
        self._close_events = False  # inotify tells when a writer closes a file
        self._last_rescan = 0.0
        # Names a rejected plan named that had not arrived: they follow it into failed/ when they do.
        self._rejected_names: dict[str, tuple[float, DropFolderError]] = {}
        # Files the watcher was killed while reading (journal inspections), with the count.
        self._interrupted: dict[str, int] = {}
        # Top-level INBOX names an unfinished move (failing / claiming) still owns: not jobs of their own.
        self._held: set[str] = set()
        self._move_failures: dict[int, int] = {}  # job id -> consecutive failed tries of its planned moves
        self._folder_failures = 0  # consecutive times OUTBOX's staging could not be written
        self._blocked = False  # --once: a folder could not be written; stop instead of waiting
        self._stop_requested_at: Optional[float] = None
        self.ready = threading.Event()  # set once start-up (recovery, first scan) is over

    # ------------------------------------------------------------------ control

    def request_stop(self, reason: str = "stop requested") -> None:
        """Thread-safe: finish or re-queue the current job, then return from run()."""
        if not self._stop.is_set():
            logger.info("{}: stopping after the current chunk (the job is re-queued if unfinished)", reason)
            self._stop_requested_at = time.monotonic()
        self._stop.set()
        self._events.put(("stop", None))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _on_signal(self, signum: int) -> None:
        # A second signal raises KeyboardInterrupt (stop_on_signals); the journal re-queues the job.
        self.request_stop(signal_name(signum))

    # ------------------------------------------------------------------ set-up

    def _check_folders(self) -> None:
        """The watcher's own configuration: every folder it needs exists and can be written (else exit 2)."""
        if not self.inbox.is_dir():
            raise InvalidInputError("INBOX is not a folder", path=str(self.config.inbox), hint="create it or check the path")
        if self.outbox == self.inbox or self.inbox in self.outbox.parents and self.outbox.relative_to(self.inbox).parts[0] in (
            "processing", "done", "failed", "logs", ".latentsync"
        ):
            raise InvalidInputError("OUTBOX must not be INBOX or one of its working folders", path=str(self.config.outbox),
                                    hint="use a separate folder, e.g. --out ../outbox")
        folders = [("INBOX", self.inbox), ("INBOX/processing", self.processing), ("INBOX/done", self.done_dir),
                   ("INBOX/failed", self.failed_dir), ("the state folder", self.state_dir), ("OUTBOX", self.outbox),
                   ("OUTBOX/.staging", self.staging_root)]
        if self.config.log_file:
            folders.append(("INBOX/logs", self.logs_dir))
        for what, folder in folders:
            if folder.parent == self.inbox and folder.is_symlink():
                raise InvalidInputError(f"{what} is a symbolic link; the watcher's folders in INBOX must be real "
                                        "folders (anyone who can write to INBOX could point a link anywhere)",
                                        path=str(folder), hint="replace the link with a folder")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise InvalidInputError(f"{what} cannot be created ({error.strerror or error})", path=str(folder),
                                        hint="check the path and its permissions") from None
            if not folder.is_dir():
                raise InvalidInputError(f"{what} is not a folder", path=str(folder), hint="check the path")
            why = _writable(folder)
            if why is not None:
                raise InvalidInputError(f"{what} cannot be written ({why})", path=str(folder),
                                        hint="the watcher moves and writes files there: make it writable for the "
                                             "user the watcher runs as")

    def _lock(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise WatchFolderBusy(f"another watcher (pid {holder}) is already watching this INBOX",
                                      path=str(self.config.inbox), hint="stop it first, or watch another folder") from None
            handle.close()
            # A file system without locks (some network shares): claims are still renames, so two
            # watchers cannot process one file, but they may race for them.
            logger.warning("cannot lock {} ({}); make sure only one watcher watches this INBOX", path,
                           error.strerror or error)
            return
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handles.append(handle)

    def _acquire_lock(self) -> None:
        """One owner per INBOX: the lock lives in INBOX itself, whatever --state says (and in the state folder)."""
        try:
            self._lock(self.inbox / ".latentsync" / "watch.lock")
            state_lock = self.state_dir / "watch.lock"
            if state_lock != self.inbox / ".latentsync" / "watch.lock":
                self._lock(state_lock)
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        for handle in self._lock_handles:
            with contextlib.suppress(OSError, ValueError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                handle.close()
        self._lock_handles = []

    def _start_logging(self) -> None:
        if not self.config.log_file:
            return
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._log_sink = logger.add(
                self.logs_dir / "watch.log",
                level=self.config.log_level,
                rotation="10 MB",
                retention=5,
                backtrace=False,
                diagnose=False,  # never dump local variables into a shared folder
                format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
                encoding="utf-8",
                errors="backslashreplace",  # a name that is not UTF-8 is logged escaped, never lost
            )
        except OSError as error:
            raise InvalidInputError(f"cannot write the log ({error.strerror or error})", path=str(self.logs_dir),
                                    hint="make INBOX/logs writable") from None

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler

        events = self._events

        class _Forward(FileSystemEventHandler):
            def __init__(self, tag: str):
                self.tag = tag

            def on_any_event(self, event: Any) -> None:
                events.put((self.tag, event))

        if self.config.poll is not None:
            from watchdog.observers.polling import PollingObserver

            observer = PollingObserver(timeout=self.config.poll)
        else:
            try:
                from watchdog.observers.inotify import InotifyObserver
            except ImportError:  # not Linux: no close events, readiness by stable size and mtime
                from watchdog.observers import Observer

                observer = Observer()
            else:
                # Full events: a file renamed in from an unwatched folder arrives as a move
                # (complete), not as a creation (still being written).
                observer = InotifyObserver(generate_full_events=True)
                self._close_events = True
        observer.schedule(_Forward("inbox"), str(self.inbox), recursive=False)
        if self.rules.path is not None and self.rules.path.is_dir():
            observer.schedule(_Forward("rules"), str(self.rules.path), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _guard_folders(self) -> None:
        """processing/, done/, failed/ and logs/ live in INBOX, where anyone who drops files can also
        replace them: a link there would send users' files and error files anywhere. Before any
        move, each must still be a real folder; a link is removed and a file moved aside (it then
        goes to failed/ like any other stray file), and the folder is made again."""
        for folder in (self.processing, self.done_dir, self.failed_dir, self.logs_dir):
            try:
                info = os.lstat(folder)
            except FileNotFoundError:
                folder.mkdir(exist_ok=True)
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            if stat.S_ISLNK(info.st_mode):
                logger.error("{} was replaced by a symbolic link; removing the link and making the folder again",
                             folder)
                os.unlink(folder)
            else:
                aside = self.inbox / f"{folder.name}.not-a-folder-{int(time.time())}"
                logger.error("{} was replaced by a file; moving it to {} and making the folder again", folder,
                             aside.name)
                os.rename(folder, aside)
            folder.mkdir(exist_ok=True)

    def _claim_folder(self, row: JobRow) -> Optional[Path]:
        """The job's claim folder, only while it is a real folder (never followed through a link)."""
        if not row.claim_dir:
            return None
        folder = self.inbox / row.claim_dir
        try:
            return folder if stat.S_ISDIR(os.lstat(folder).st_mode) else None
        except OSError:
            return None

    def _open_journal(self) -> Journal:
        try:
            return Journal(self.state_dir / "journal.sqlite3")
        except (sqlite3.Error, OSError) as error:
            raise InvalidInputError(f"cannot open the journal ({error})", path=str(self.state_dir / "journal.sqlite3"),
                                    hint="check the state folder (--state): it must be a writable local folder") from None

    # ------------------------------------------------------------------ main loop

    def run(self, *, once: bool = False) -> WatchSummary:
        """Watch until stopped; with `once`, process what is in INBOX now and return."""
        self._once = once
        self._check_folders()
        self._acquire_lock()
        signals = contextlib.ExitStack()  # closed in `finally`, before the lock and the log go
        try:
            self._start_logging()
            signals.enter_context(stop_on_signals(self._on_signal, stop=self._stop))
            self.journal = self._open_journal()
            self.rules.load_initial()
            if self.executor is default_executor:
                # models and compiled graphs stay loaded between clips: the rules' time facts know
                from ..facts.timing import mark_resident

                mark_resident()
            logger.info("watching {} -> {} ({}{})", self.inbox, self.outbox,
                        "poll every %gs" % self.config.poll if self.config.poll is not None else "inotify",
                        ", once" if once else "")
            self.recover()
            if not once:
                self._start_observer()
            started = time.monotonic()
            self._rescan(started)
            self.ready.set()
            failures = 0
            while not self._stop.is_set():
                try:
                    if self._step(started):
                        break
                    failures = 0
                except Exception:  # noqa: BLE001 — a fault no item handler contained: log it, back off, go on
                    failures += 1
                    logger.exception("watcher: unexpected error (#{} in a row); carrying on", failures)
                    if once and failures >= 5:
                        raise
                    self._stop.wait(min(0.5 * 2 ** min(failures, 6), self.config.io_retry_max))
        finally:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=5)
                self._observer = None
            if self.journal is not None:
                with contextlib.suppress(Exception):
                    self.journal.close()
            signals.close()  # the previous SIGINT/SIGTERM handlers are back
            logger.info("watcher stopped: {} done, {} failed, {} re-queued", self.summary.done, self.summary.failed,
                        self.summary.requeued)
            if self._log_sink is not None:
                logger.remove(self._log_sink)
                self._log_sink = None
            self._release_lock()
        return self.summary

    def _step(self, started: float) -> bool:
        """One turn of the loop; True when `--once` has nothing left to do."""
        assert self.journal is not None
        once = self._once
        now = time.monotonic()
        self._drain_events(now)
        if once or now - self._last_rescan >= self.config.rescan_interval:
            self._rescan(now)
        self._update_stability(now)
        self.rules.maybe_reload(now)
        decided = self._discover_and_claim(now)
        self._retry_moves()
        if self._stop.is_set():
            return True
        if not self._blocked:
            row = self.journal.next_runnable(time.time())
            if row is not None:
                self._run_one(row)
                return False
        wait = self.config.tick
        wakeup = None if self._blocked else self.journal.next_wakeup()
        if once:
            idle_for = now - started
            if not decided and wakeup is None and idle_for >= self._stability_window() + self.config.tick:
                return True
        retry_at = self._next_move_retry()
        for moment in (wakeup, retry_at):
            if moment is not None:
                wait = min(wait, max(0.0, moment - time.time()))
        try:
            tag, event = self._events.get(timeout=max(wait, 0.001))
            self._handle_event(tag, event, time.monotonic())
        except queue.Empty:
            pass
        return False

    # ------------------------------------------------------------------ events and readiness

    def _stability_window(self) -> float:
        return self.config.poll if self.config.poll is not None else self.config.settle

    def _top_name(self, path: Any) -> Optional[str]:
        text = os.fsdecode(path)
        if os.path.dirname(text) != str(self.inbox):
            return None
        name = os.path.basename(text)
        return name if classify(name) != "ignore" else None

    def _drain_events(self, now: float) -> None:
        while True:
            try:
                tag, event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(tag, event, now)

    def _handle_event(self, tag: str, event: Any, now: float) -> None:
        if tag == "rules":
            if event.event_type not in ("opened", "closed_no_write"):
                self.rules.notify(now)
            return
        if tag != "inbox" or event.is_directory:
            return  # folders are found by the rescan
        kind = event.event_type
        polling = not self._close_events
        if kind == "moved":
            source = self._top_name(event.src_path)
            if source is not None:
                self._forget(source)
            dest = self._top_name(event.dest_path)
            if dest is not None and dest not in self._held:
                tracked = self._tracked.setdefault(dest, _Tracked(first_seen=now))
                tracked.stat = None
                if polling:
                    tracked.ready_at, tracked.need_close = None, False
                else:  # a rename is atomic: the file arrived complete
                    tracked.ready_at, tracked.need_close = now, False
            return
        name = self._top_name(event.src_path)
        if name is None or name in self._held:
            return
        if kind != "deleted" and not os.path.lexists(self.inbox / name):
            return  # a late event about a file already claimed or removed
        if kind == "deleted":
            self._forget(name)
        elif kind in ("created", "modified"):
            tracked = self._tracked.setdefault(name, _Tracked(first_seen=now))
            tracked.ready_at = None
            tracked.stat = None
            # A link, a FIFO or a device is never "closed after writing": it is complete as it appears.
            tracked.need_close = not polling and not self._is_special(name)
            if tracked.need_close is False and not polling:
                tracked.ready_at = now
        elif kind == "closed" and not polling:
            tracked = self._tracked.setdefault(name, _Tracked(first_seen=now))
            tracked.ready_at, tracked.need_close = now, False

    def _is_special(self, name: str) -> bool:
        """Not a plain, singly linked file (or gone): nothing will ever be written into it and closed."""
        return file_problem(self.inbox / name, self.inbox) is not None

    def _forget(self, name: str) -> None:
        self._tracked.pop(name, None)
        self._plan_cache.pop(name, None)

    def _own_folder(self, path: Path) -> bool:
        """A folder inside INBOX the watcher itself uses (working folders, --state, --out inside INBOX)."""
        if path.name in RESERVED_DIRS:
            return True
        for mine in (self.state_dir, self.outbox, self.staging_root):
            if path == mine or path in mine.parents:
                return True
        return False

    def _rescan(self, now: float) -> None:
        self._last_rescan = now
        present = set()
        try:
            entries = list(os.scandir(self.inbox))
        except OSError as error:
            if "rescan" not in self._warned:
                self._warned.add("rescan")
                logger.error("cannot list INBOX ({}); retrying", error.strerror or error)
            return
        self._warned.discard("rescan")
        for entry in entries:
            name = entry.name
            if classify(name) == "ignore" or name in self._held:
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and self._own_folder(self.inbox / name):
                continue
            present.add(name)
            if name not in self._tracked:
                self._tracked[name] = _Tracked(first_seen=now)
        for name in list(self._tracked):
            if name not in present:
                self._forget(name)

    def _update_stability(self, now: float) -> None:
        window = self._stability_window()
        for name, tracked in self._tracked.items():
            if tracked.ready_at is not None:
                continue
            if tracked.need_close:
                if self._is_special(name):  # became (or always was) a link, FIFO, device, hard link
                    tracked.need_close, tracked.ready_at = False, now
                continue
            try:
                info = os.lstat(self.inbox / name)
            except OSError:
                continue
            signature = (info.st_size, info.st_mtime_ns, info.st_ino, info.st_mode, info.st_nlink)
            if signature != tracked.stat:
                tracked.stat, tracked.stat_since = signature, now
            elif now - tracked.stat_since >= window:
                tracked.ready_at = now

    # ------------------------------------------------------------------ discovery

    def _max_attempts(self) -> int:
        return self.config.retries + 1

    def _parse_plan_cached(self, name: str) -> Any:
        """DropPlan, or (DropFolderError, names the broken plan seems to give); re-read only when the file changes.

        Reading is bounded (engine limits) and contained: any failure is the plan's error. The read is
        recorded in the journal first, so a watcher killed while reading counts an attempt at start-up."""
        path = self.inbox / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            return DropFolderError(f"cannot be examined ({error.strerror or error})", path=name), []
        key = (info.st_size, info.st_mtime_ns, info.st_ino)
        cached = self._plan_cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        assert self.journal is not None
        self.journal.begin_inspection(name)
        result: Any
        try:
            result = parse_drop_plan(path)
        except DropFolderError as error:
            result = (error, self._guess_named(path))
        except FileNotFoundError:
            self.journal.end_inspection(name)
            return None
        except Exception as error:  # noqa: BLE001 — whatever a hostile plan makes the reader raise is the plan's error
            record = error_record(error)
            result = (DropFolderError(f"the plan cannot be read: {record['message']}", path=name,
                                      hint=record.get("hint") or "save the plan as a small UTF-8 YAML file"),
                      self._guess_named(path))
        self.journal.end_inspection(name)
        self._interrupted.pop(name, None)
        self._plan_cache[name] = (key, result)
        return result

    @staticmethod
    def _guess_named(path: Path) -> list[str]:
        try:
            return names_in_broken_plan(read_plan_bytes(path))
        except Exception:  # noqa: BLE001 — best effort
            return []

    def _problem_of(self, name: str) -> Optional[DropFolderError]:
        """Why a top-level name cannot be part of a job: an unsafe name, a link, a FIFO, a folder..."""
        reason = unsafe_reason(name)
        if reason is not None:
            return DropFolderError(f"cannot be processed: {reason}", path=display(name),
                                   hint="rename the file (letters, digits, spaces, - _ .) and drop it again; it was "
                                        f"moved to failed/ as {sanitized(name)!r}")
        return file_problem(self.inbox / name, self.inbox)

    def _decide(self, now: float) -> list[Any]:
        """Group ready files into claims and rejects; files that should wait are left alone."""
        once = self._once
        tracked = self._tracked
        ready = {name for name, t in tracked.items() if t.ready_at is not None}
        decisions: list[Any] = []
        reserved: set[str] = set()
        held_stems: set[str] = set()
        by_stem: dict[str, list[str]] = {}
        for name in tracked:
            by_stem.setdefault(stem_of(name), []).append(name)
        problems: dict[str, Optional[DropFolderError]] = {}

        def problem(name: str) -> Optional[DropFolderError]:
            if name not in problems:
                try:
                    problems[name] = self._problem_of(name)
                except Exception as error:  # noqa: BLE001 — whatever the entry is, it is refused, never fatal
                    problems[name] = DropFolderError(f"cannot be examined ({error_record(error)['message']})",
                                                     path=display(name), hint="drop a plain file under a plain name")
            return problems[name]

        def media_of_stem(stem: str) -> list[str]:
            return [n for n in by_stem.get(stem, []) if classify(n) in ("video", "audio") and n not in reserved]

        def reject(stem: str, files: list[str], error: LatentSyncError, what: str = "discovery") -> None:
            files = [f for f in dict.fromkeys(files) if f not in reserved]
            reserved.update(files)
            decisions.append(_Reject(stem, files, error, what))

        # 1. Plans first: a plan decides what its files are, including when it is rejected.
        for name in sorted(tracked):
            if classify(name) != "plan" or name in reserved:
                continue
            if name not in ready:
                held_stems.add(stem_of(name))
                continue
            stem = stem_of(name)
            bad = problem(name)
            if bad is not None:
                reject(stem, [name] + [n for n in media_of_stem(stem) if n in ready], bad)
                continue
            crashes = self._interrupted.get(name, 0)
            if crashes >= self._max_attempts():
                reject(stem, [name] + [n for n in media_of_stem(stem) if n in ready], DropFolderError(
                    f"the watcher stopped {crashes} time(s) while reading this plan (it may crash or hang the reader)",
                    path=name, hint="check the plan: a plain YAML file of a few lines; see docs/limits.md"))
                self._interrupted.pop(name, None)
                assert self.journal is not None
                self.journal.end_inspection(name)  # a later plan of this name starts with a clean slate
                continue
            parsed = self._parse_plan_cached(name)
            if parsed is None:
                continue
            if isinstance(parsed, tuple):  # the plan is rejected: its media go with it (pairs are atomic)
                error, guessed = parsed
                named = [n for n in guessed + media_of_stem(stem) if n != name and n not in reserved]
                present = [n for n in named if n in tracked]
                waiting = [n for n in present if n not in ready]
                waited = now - (tracked[name].ready_at or now)
                if waiting and not once and waited < self.config.input_wait:
                    reserved.update([name] + present)
                    continue
                reject(stem, [name] + [n for n in present if n in ready], error)
                self._remember_rejected([n for n in named if n not in present], error)
                continue
            plan: DropPlan = parsed
            taken = [n for n in plan.inputs if n in reserved]
            if taken:
                reject(stem, [name], DropFolderError(
                    f"names {display(taken[0])}, which another plan dropped before it already names", path=name,
                    hint="drop one plan per clip; copy the file under a second name for a second job"))
                continue
            bad_inputs = [(n, problem(n)) for n in plan.inputs if n in tracked and n in ready and problem(n)]
            if bad_inputs:
                culprit, why = bad_inputs[0]
                error = DropFolderError(f"names {display(culprit)}, which {why.message}", path=name, hint=why.hint)
                reject(stem, [name] + [n for n in plan.inputs if n in tracked and n in ready], error)
                continue
            reserved.add(name)
            reserved.update(plan.inputs)
            missing = [n for n in plan.inputs if n not in tracked]
            pending = [n for n in plan.inputs if n in tracked and n not in ready]
            waited = now - (tracked[name].ready_at or now)
            if missing:
                if once or waited >= self.config.input_wait:
                    present = [n for n in plan.inputs if n in tracked and n in ready]
                    error = DropFolderError(
                        f"names {', '.join(display(n) for n in missing)}, which is not in INBOX"
                        + ("" if once else f" (waited {self.config.input_wait:g} s)"),
                        path=name, hint="drop the plan and the files it names into INBOX together")
                    reserved.difference_update([name] + present)
                    reject(stem, [name] + present, error)
                    self._remember_rejected(missing, error)
                continue
            if pending:
                continue
            decisions.append(_Claim("plan", stem, [name] + plan.inputs, plan.output))

        # 2. Files a rejected plan named that arrived after it: they follow it into failed/.
        for name in sorted(tracked):
            if name in reserved or name not in ready:
                continue
            remembered = self._rejected_names.get(name)
            if remembered is not None and remembered[0] >= now:
                error = remembered[1]
                reject(stem_of(name), [name], DropFolderError(
                    f"was named by {error.path}, which was rejected: {error.message}", path=name,
                    hint=error.hint or "fix the plan and drop it again together with its files"))
                self._rejected_names.pop(name, None)

        # 3. Names and file types that cannot be handled: with every ready file of the same name.
        for name in sorted(tracked):
            if name in reserved or name not in ready:
                continue
            bad = problem(name)
            if bad is not None:
                stem = stem_of(name)
                writing = [n for n in media_of_stem(stem) if n not in ready and n != name]
                waited = now - (tracked[name].ready_at or now)
                if writing and not once and waited < self.config.input_wait:
                    reserved.update([name] + writing)  # its companion is still arriving: they go together
                    continue
                companions = [n for n in media_of_stem(stem) if n in ready and n != name]
                reject(stem, [name] + companions, bad)

        # 4. Clips, with their audio.
        for name in sorted(tracked):
            if name in reserved or classify(name) != "video" or name not in ready:
                continue
            stem = stem_of(name)
            if stem in held_stems:
                continue
            companions = [n for n in by_stem.get(stem, []) if n != name and n not in reserved]
            if any(n not in ready for n in companions):
                continue  # a same-name file is still being written
            if not once and now - (tracked[name].ready_at or now) < self.config.pair_wait:
                continue
            audios = [n for n in companions if classify(n) == "audio"]
            if len(audios) > 1:
                error = DropFolderError(f"has {len(audios)} audio files beside it ({', '.join(sorted(audios))}); which one is meant?",
                                        path=name, hint="keep one audio file per clip, or drop a .plan.yaml naming the audio")
                reject(stem, [name] + sorted(audios), error)
                continue
            reserved.add(name)
            reserved.update(audios)
            decisions.append(_Claim("pair", stem, [name] + audios, fit(stem, ".mp4", 255 - _OUTBOX_TAIL)))

        # 5. Everything else.
        for name in sorted(tracked):
            if name in reserved or name not in ready:
                continue
            kind = classify(name)
            if kind == "audio":
                if any(classify(n) == "video" for n in by_stem.get(stem_of(name), [])) or stem_of(name) in held_stems:
                    continue
                waited = now - (tracked[name].ready_at or now)
                if once:
                    if name not in self._warned:
                        self._warned.add(name)
                        logger.warning("{}: audio without a video named {}.*; left in INBOX", display(name),
                                       display(stem_of(name)))
                    continue
                if waited >= self.config.input_wait:
                    error = DropFolderError(f"no video named {stem_of(name)}.* arrived within {self.config.input_wait:g} s",
                                            path=name, hint=f"drop {stem_of(name)}.mp4 together with its audio")
                    reject(stem_of(name), [name], error)
            elif kind == "unknown":
                error = DropFolderError("is not a job file", path=name,
                                        hint="drop a video (.mp4, .mov, ...), its audio (.wav, .mp3, .m4a) or a NAME.plan.yaml")
                reject(stem_of(name), [name], error)
        return decisions

    def _remember_rejected(self, names: list[str], error: DropFolderError) -> None:
        until = time.monotonic() + self.config.input_wait
        for name in names:
            if classify(name) in ("video", "audio"):
                self._rejected_names[name] = (until, error)

    def _discover_and_claim(self, now: float) -> bool:
        decisions = self._decide(now)
        for decision in decisions:
            if self._stop.is_set():
                break  # a stop is honoured between items, however many were dropped at once
            for name in decision.files:
                self._forget(name)
            try:
                if isinstance(decision, _Claim):
                    self._claim(decision)
                else:
                    self._reject(decision)
            except Exception:  # noqa: BLE001 — one item's trouble never stops the others
                logger.exception("{} {}: could not be handled now; it is tried again",
                                 "claim of" if isinstance(decision, _Claim) else "rejection of",
                                 ", ".join(display(n) for n in decision.files))
        for name, (until, _error) in list(self._rejected_names.items()):
            if until < now:
                del self._rejected_names[name]
        return bool(decisions)

    def _reject(self, decision: _Reject) -> None:
        assert self.journal is not None
        job_id = self.journal.create(name=decision.name, kind="reject", files=decision.files, max_attempts=1)
        self.summary.job_ids.append(job_id)
        self._fail(self.journal.get(job_id), decision.error, stage=decision.what, transient=False)

    # ------------------------------------------------------------------ claim

    def _claim(self, claim: _Claim) -> int:
        journal = self.journal
        assert journal is not None
        job_id = journal.create(name=claim.name, kind=claim.kind, files=claim.files,
                                max_attempts=self._max_attempts(), output=claim.output)
        self.summary.job_ids.append(job_id)
        claim_dir = f"processing/{job_id:06d}-{_safe_component(claim.name)}"
        self._guard_folders()
        journal.set_claim_dir(job_id, claim_dir)
        row = journal.get(job_id)
        try:
            claimed = self._complete_claim(row)
        except Exception as error:  # noqa: BLE001 — hand back what was moved; the files are tried again
            self._abandon_claim(row, f"the claim failed ({error_record(error)['message']})")
            raise
        if claimed:
            logger.info("job {} claimed: {}", job_id, ", ".join(display(n) for n in claim.files))
        return job_id

    def _complete_claim(self, row: JobRow) -> bool:
        """Rename every file of the job into its claim folder (idempotent: safe to redo after a crash).

        A rename is the claim: a file gone from INBOX and not in the claim folder was taken by someone
        else (another watcher, the user); the claim is then abandoned and what was moved goes back."""
        assert self.journal is not None and row.claim_dir is not None
        folder = self.inbox / row.claim_dir
        folder.mkdir(parents=True, exist_ok=True)
        for name in row.files:
            source, target = self.inbox / name, folder / name
            if os.path.lexists(target):
                continue
            try:
                os.rename(source, target)
            except FileNotFoundError:
                self._abandon_claim(row, f"{display(name)} vanished from INBOX before it was claimed")
                return False
        self.journal.queued(row.id, detail="claimed")
        return True

    def _abandon_claim(self, row: JobRow, why: str) -> None:
        """Put the files already moved back into INBOX and end the row (they are picked up again)."""
        assert self.journal is not None
        folder = self.inbox / row.claim_dir if row.claim_dir else None
        if folder is not None and folder.is_dir():
            for name in row.files:
                moved = folder / name
                if not os.path.lexists(moved):
                    continue
                target = self.inbox / name
                if os.path.lexists(target):
                    target = self.inbox / _suffixed(name, self._free_names(self.inbox, [name]))
                try:
                    os.rename(moved, target)
                except OSError as error:
                    logger.error("job {}: cannot return {} to INBOX ({}); it stays in {}", row.id, display(name),
                                 error.strerror or error, folder)
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.journal.abandoned(row.id, why)
        logger.warning("job {} ({}) abandoned: {}", row.id, display(row.name), why)

    # ------------------------------------------------------------------ run

    def _staging_dir(self, row: JobRow) -> Path:
        return self.staging_root / Path(row.claim_dir or f"{row.id:06d}").name

    def _attempt_staging(self, row: JobRow, attempt: int) -> Path:
        """A fresh folder per attempt: a pipeline abandoned after a timeout cannot write into the next one."""
        return self._staging_dir(row) / f"attempt-{attempt}"

    def _run_one(self, row: JobRow) -> None:
        journal = self.journal
        assert journal is not None
        attempt = row.attempts + 1
        ruleset = self.rules.current
        label = f"job {row.id} ({display(row.name)})"
        staging = self._attempt_staging(row, attempt)
        try:
            shutil.rmtree(self._staging_dir(row), ignore_errors=True)
            staging.mkdir(parents=True, exist_ok=True)
            why = _writable(staging)
            if why is not None:
                raise _FolderUnavailable(f"OUTBOX/.staging cannot be written ({why})")
        except (OSError, _FolderUnavailable) as error:
            self._wait_for_folders(row, attempt, str(error) if isinstance(error, _FolderUnavailable)
                                   else f"cannot create {staging} ({error.strerror or error})")
            return
        self._folder_failures = 0
        journal.running(row.id, attempts=attempt, rules_version=self.rules.version, rules_hash=self.rules.hash)
        logger.info("{}: attempt {}/{} with rules {}", label, attempt, row.max_attempts, self.rules.version)
        stage = "validate"
        started = time.perf_counter()
        try:
            spec = self._build_spec(row, staging)
            stage = "run"
            report = self._execute(row, spec, ruleset, label)
        except KeyboardInterrupt:
            self._requeue(row, attempt, "interrupted")
            raise
        except _JobStuck as stuck:
            # The pipeline ignores the stop request: leave the job "running" in the journal and stop; the
            # next start counts this attempt (so a job that cannot be stopped cannot loop for ever).
            logger.error("{}: {}; it is left for the next start, which counts this attempt", label, stuck)
            return
        except Exception as error:  # noqa: BLE001 — every failure is journaled, none escapes
            with_file = getattr(error, "with_file", None)
            if row.kind == "plan" and callable(with_file):  # a plan error found while resolving names the plan
                error = with_file(row.files[0])
            verdict = classify_error(error)
            if verdict == CANCEL:
                shutil.rmtree(staging, ignore_errors=True)
                self._requeue(row, attempt, "cancelled on stop")
                return
            blocked = _writable(staging) if staging.is_dir() else "it is gone"
            shutil.rmtree(staging, ignore_errors=True)
            if stage == "run" and blocked is not None and verdict == TRANSIENT:
                self._wait_for_folders(row, attempt, f"OUTBOX/.staging cannot be written ({blocked}): "
                                                     f"{error_record(error)['message']}")
                return
            transient = verdict == TRANSIENT
            record = _error_dict(error, stage=stage, attempt=attempt, transient=transient)
            if transient and attempt < row.max_attempts:
                delay = min(self.config.retry_delay * 2 ** (attempt - 1), self.config.retry_delay_max)
                logger.warning("{}: attempt {} failed ({}: {}); retrying in {:g} s", label, attempt,
                               record["type"], record["message"], delay)
                journal.record_error(row.id, "queued", record, row.errors + [record],
                                     next_attempt_at=time.time() + delay)
                self.summary.retried += 1
                return
            self._fail(journal.get(row.id), error, stage=stage, transient=transient, record=record)
            return
        logger.info("{}: pipeline finished in {:.2f} s", label, time.perf_counter() - started)
        try:
            self._finish(journal.get(row.id), spec, report, staging)
        except Exception as error:  # noqa: BLE001
            record = _error_dict(error, stage="finish", attempt=attempt, transient=True)
            logger.exception("{}: could not move the output into OUTBOX", label)
            self._fail(journal.get(row.id), error, stage="finish", transient=True, record=record)

    def _execute(self, row: JobRow, spec: JobSpec, ruleset: Any, label: str) -> JobReport:
        """Run the pipeline in a worker thread, so that this thread keeps honouring stop signals and the
        job timeout. Returns its report or raises its error (JobTimeout when it ran out of time)."""
        result: dict[str, Any] = {}
        timed_out = threading.Event()

        def cancelled() -> bool:
            return self._stop.is_set() or timed_out.is_set()

        def work() -> None:
            try:
                result["report"] = self.executor(spec, ruleset=ruleset, progress=self._progress_logger(label),
                                                 cancel=cancelled, benchmark_cache=self.config.benchmark_cache)
            except BaseException as error:  # noqa: BLE001 — handed to the watcher's thread
                result["error"] = error

        worker = threading.Thread(target=work, name=f"latentsync-job-{row.id}", daemon=True)
        worker.start()
        started = time.monotonic()
        timeout = self.config.job_timeout
        out_of_time_at: Optional[float] = None
        while worker.is_alive():
            worker.join(0.05)
            if not worker.is_alive():
                break
            now = time.monotonic()
            if self._stop.is_set():
                asked = self._stop_requested_at or now
                if now - asked > self.config.stop_grace:
                    raise _JobStuck(f"the pipeline did not stop within {self.config.stop_grace:g} s of the stop request")
            if timeout is not None and now - started > timeout:
                if out_of_time_at is None:
                    out_of_time_at = now
                    timed_out.set()
                    logger.warning("{}: still running after {:g} s (--job-timeout); cancelling it", label, timeout)
                elif now - out_of_time_at > self.config.stop_grace:
                    logger.error("{}: the pipeline did not stop within {:g} s of its timeout; abandoning it", label,
                                 self.config.stop_grace)
                    raise JobTimeout(f"the job ran longer than {timeout:g} s (--job-timeout) and did not stop",
                                     hint="a clip this long may need a longer --job-timeout; else the input may hang "
                                          "the decoder: check logs/watch.log")
        if "error" in result:
            error = result["error"]
            if not isinstance(error, Exception):  # SystemExit from a pipeline must not end the watcher
                raise RuntimeError(f"the pipeline raised {type(error).__name__}: {error}") from error
            if timed_out.is_set() and not self._stop.is_set() and classify_error(error) == CANCEL:
                raise JobTimeout(f"the job ran longer than {timeout:g} s (--job-timeout)",
                                 hint="a clip this long may need a longer --job-timeout (latentsync-run watch "
                                      "--job-timeout SECONDS)") from None
            raise error
        return result["report"]

    def _wait_for_folders(self, row: JobRow, attempt: int, why: str) -> None:
        """OUTBOX cannot be written: the job waits (not counted as an attempt) and is tried again with backoff."""
        assert self.journal is not None
        self._folder_failures += 1
        delay = min(max(self.config.retry_delay, 1.0) * 2 ** (self._folder_failures - 1), self.config.io_retry_max)
        shutil.rmtree(self._staging_dir(row), ignore_errors=True)
        self.journal.queued(row.id, detail=why, attempts=attempt - 1, next_attempt_at=time.time() + delay)
        logger.error("job {} ({}): {}; it waits and is tried again in {:g} s (not counted as an attempt)", row.id,
                     display(row.name), why, delay)
        if self._once:
            self._blocked = True  # --once: leave it queued for the next run instead of waiting here

    def _requeue(self, row: JobRow, attempt: int, why: str) -> None:
        assert self.journal is not None
        shutil.rmtree(self._staging_dir(row), ignore_errors=True)
        self.journal.queued(row.id, detail=why, attempts=attempt - 1)  # a stop is not a failed attempt
        self.summary.requeued += 1
        logger.info("job {} ({}) re-queued: {}", row.id, display(row.name), why)

    def _progress_logger(self, label: str) -> Callable[[str, int, int], None]:
        last = {"stage": None}

        def progress(stage: str, done: int, total: int) -> None:
            if stage != last["stage"]:
                last["stage"] = stage
                logger.info("{}: {} ({} steps)", label, stage, total)
            logger.debug("{}: {} {}/{}", label, stage, done, total)

        return progress

    def _build_spec(self, row: JobRow, staging: Path) -> JobSpec:
        from ..output_safety import check_outputs

        claim = self.inbox / (row.claim_dir or "")
        for name in row.files:
            check_claimed_file(claim / name, self.inbox)
        desired = row.output or f"{row.name}.mp4"
        base = stem_of(desired)
        # A short name in staging: the pipeline's temp files and reports add to it.
        output = staging / fit(base, desired[len(base):], 120)
        if row.kind == "pair":
            video, audio = row.files[0], (row.files[1] if len(row.files) > 1 else None)
            spec = JobSpec(video=claim / video, output=output, audio=claim / audio if audio else None, name=row.name)
            if self.config.weights is not None:
                spec.weights = self.config.weights
            if self.config.goal is not None:
                spec.goal = self.config.goal
        else:
            plan = parse_drop_plan(claim / row.files[0])  # again, from the claimed bytes
            if plan.inputs != row.files[1:]:
                raise DropFolderError("the plan changed while it was being claimed", path=row.files[0],
                                      hint="drop the plan again once it is saved")
            spec = self._spec_from_drop_plan(row, plan, claim, output)
        check_outputs(spec)  # outputs never overwrite inputs (the same check as the CLI's and Ray's)
        return spec

    def _spec_from_drop_plan(self, row: JobRow, plan: DropPlan, claim: Path, output: Path) -> JobSpec:
        """The engine validates the user's own plan (so its errors name the user's lines); paths are then pinned."""
        claimed_plan = claim / plan.name
        try:
            specs = load_plan_specs(claimed_plan)
        except InvalidInputError as error:
            raise _renamed_error(error, claimed_plan, plan.name) from None
        if len(specs) != 1:
            raise DropFolderError(f"a dropped plan must describe exactly one job, this one has {len(specs)}",
                                  path=plan.name, hint="drop one plan file per clip")
        spec = specs[0]
        # The drop-folder checks, not the engine's path resolution, decide what is read and written.
        spec.video = claim / plan.inputs[0]
        spec.audio = claim / plan.job["audio"] if plan.job.get("audio") is not None else None
        spec.output = output
        spec.report = None
        spec.overwrite = False
        if "weights" in plan.job:
            spec.weights = plan.job["weights"]  # a keyword (parse_drop_plan allows no folder)
        elif self.config.weights is not None:
            spec.weights = self.config.weights
        else:
            spec.weights = JobSpec.__dataclass_fields__["weights"].default
        if "goal" not in plan.job and self.config.goal is not None:
            spec.goal = self.config.goal
        spec.name = spec.name or row.name
        return spec

    # ------------------------------------------------------------------ finish / fail

    def _free_names(self, folder: Path, names: list[str], extra: Callable[[str], list[str]] = lambda s: []) -> str:
        """The first suffix ('', '-2', '-3', ...) under which every name is free in `folder`."""
        for index in range(1, 100000):
            suffix = "" if index == 1 else f"-{index}"
            candidates = [_suffixed(n, suffix) for n in names] + extra(suffix)
            if not any(os.path.lexists(folder / c) for c in candidates):
                return suffix
        raise OSError(f"no free name in {folder}")

    def _finish(self, row: JobRow, spec: JobSpec, report: JobReport, staging: Path) -> None:
        assert self.journal is not None
        staged_output = Path(spec.output)
        if not staged_output.is_file():
            raise RuntimeError(f"the pipeline reported success but wrote no output ({staged_output.name})")
        desired = row.output or staged_output.name
        desired = _suffixed(desired, "") if len(name_bytes(desired)) <= 255 - _OUTBOX_TAIL else \
            fit(stem_of(desired), desired[len(stem_of(desired)):], 255 - _OUTBOX_TAIL)
        staged_report = staged_output.with_name(staged_output.name + ".report.json")
        extras = sorted(p.name for p in staging.iterdir()
                        if p.name.startswith(staged_output.name) and p.name not in (staged_output.name, staged_report.name)
                        and not is_partial_name(p.name))
        tails = [e[len(staged_output.name):] for e in extras]

        def outbox_name(suffix: str) -> str:
            base = stem_of(desired)
            return fit(base + suffix, desired[len(base):], 255 - _OUTBOX_TAIL)

        suffix = self._free_names(self.outbox, [desired],
                                  lambda s: [outbox_name(s) + t for t in tails + [".report.json"]])
        final_output = outbox_name(suffix)
        final_report = self.outbox / (final_output + ".report.json")
        moves = [[str(staging / e), str(self.outbox / fit(final_output, t))] for e, t in zip(extras, tails)]
        moves.append([str(staged_output), str(self.outbox / final_output)])  # the video last: it signals "done"
        claim = self.inbox / (row.claim_dir or "")
        done_names = [_safe_name(n) for n in row.files]
        done_suffix = self._free_names(self.done_dir, done_names)
        moves += [[str(claim / n), str(self.done_dir / _suffixed(safe, done_suffix))]
                  for n, safe in zip(row.files, done_names)]
        if staged_report.is_file():
            data = json.loads(staged_report.read_text())
        else:
            data = report.to_dict()
        data["output"] = str(self.outbox / final_output)
        if isinstance(data.get("job"), dict):
            # The report names where the inputs and the output finally live, not the work folders.
            final_inputs = {str(claim / n): str(self.done_dir / _suffixed(safe, done_suffix))
                            for n, safe in zip(row.files, done_names)}
            data["job"].update(output=str(self.outbox / final_output), report=str(final_report))
            for key in ("video", "audio"):
                if data["job"].get(key) in final_inputs:
                    data["job"][key] = final_inputs[data["job"][key]]
        if data.get("rules_version") is None:
            data["rules_version"] = row.rules_version
        if data.get("rules_hash") is None:
            data["rules_hash"] = row.rules_hash
        self.journal.finishing(row.id, output=final_output, moves=moves, report=data)
        self._try_moves(self.journal.get(row.id))

    def _try_moves(self, row: JobRow) -> None:
        """Complete a finishing / failing row now; if a folder cannot be written, try again later (backoff)."""
        assert self.journal is not None
        try:
            if row.state == "finishing":
                self._complete_finish(row)
            else:
                self._complete_fail(row)
        except Exception as error:  # noqa: BLE001 — OUTBOX, done/ or failed/ not writable (yet): keep the plan
            count = self._move_failures.get(row.id, 0) + 1
            self._move_failures[row.id] = count
            delay = min(max(self.config.retry_delay, 1.0) * 2 ** (count - 1), self.config.io_retry_max)
            what = "delivering the output into OUTBOX" if row.state == "finishing" else "moving the files to failed/"
            logger.error("job {} ({}): {} failed ({}); trying again in {:g} s", row.id, display(row.name), what,
                         error_record(error)["message"], delay)
            self.journal.retry_later(row.id, row.state, next_attempt_at=time.time() + delay,
                                     detail=f"{what} failed: {error_record(error)['message']}")
            self._hold(row)
            return
        self._move_failures.pop(row.id, None)

    def _hold(self, row: JobRow) -> None:
        """Files of an unfinished move still in INBOX's top level belong to that row, not to a new job."""
        for source, _target in row.moves:
            if os.path.dirname(source) == str(self.inbox):
                name = os.path.basename(source)
                self._held.add(name)
                self._forget(name)

    def _retry_moves(self) -> None:
        """Finishing / failing rows whose moves are due again (a folder was not writable)."""
        assert self.journal is not None
        due = self.journal.pending_retries(time.time())
        if not due and not self._held:
            return
        for row in due:
            if row.id in self._move_failures or row.next_attempt_at > 0:
                self._try_moves(row)
        self._held = {os.path.basename(source) for row in self.journal.jobs("finishing", "failing")
                      for source, _target in row.moves if os.path.dirname(source) == str(self.inbox)}

    def _next_move_retry(self) -> Optional[float]:
        assert self.journal is not None
        return self.journal.next_retry()

    def _complete_finish(self, row: JobRow) -> None:
        """Idempotent: write the report, apply the planned moves, mark done."""
        assert self.journal is not None and row.output is not None
        self._guard_folders()
        atomic_write_json(self.outbox / (row.output + ".report.json"), row.report, sort_keys=True)
        _apply_moves(row.moves)
        self._cleanup(row)
        self.journal.done(row.id)
        self.summary.done += 1
        logger.info("job {} ({}) done: {}", row.id, display(row.name), display(str(self.outbox / row.output)))

    def _fail(self, row: JobRow, error: BaseException, *, stage: str, transient: bool,
              record: Optional[dict[str, Any]] = None) -> None:
        assert self.journal is not None
        record = record or _error_dict(error, stage=stage, attempt=max(row.attempts, 1), transient=transient)
        errors = row.errors + [record] if record not in row.errors else row.errors
        self._guard_folders()
        claim_folder = self._claim_folder(row)
        sources = []
        for name in row.files:
            claimed = claim_folder / name if claim_folder is not None else None
            if claimed is not None and os.path.lexists(claimed):
                sources.append((name, claimed))
            elif os.path.lexists(self.inbox / name):
                sources.append((name, self.inbox / name))
        names = [n for n, _ in sources]
        safe = [_safe_name(n) for n in names]
        stem = _safe_name(row.name) if row.name else "job"

        def error_name(suffix: str) -> str:
            return fit(f"{stem}{suffix}", ".error.json")

        suffix = self._free_names(self.failed_dir, safe, lambda s: [error_name(s)])
        moves = [[str(path), str(self.failed_dir / _suffixed(target, suffix))] for (_n, path), target in zip(sources, safe)]
        error_file = self.failed_dir / error_name(suffix)
        rules_error = record.get("type") == "RulesError"
        if rules_error:
            how = RULES_HINT
        elif transient:
            how = (record.get("hint") or "") + (" " if record.get("hint") else "") + (
                f"It failed {len(errors)} time(s) with an error that may pass (memory, disk, device); "
                "see logs/watch.log, then drop the files into INBOX again.")
        else:
            how = record.get("hint") or "fix the input named above and drop it into INBOX again"
        why = record["message"] if not record.get("path") else \
            f"{display(Path(str(record['path'])).name)}: {record['message']}"
        document = {
            "job": display(row.name),
            "job_id": row.id,
            "what_failed": _WHAT_FAILED["rules"] if rules_error else _WHAT_FAILED.get(stage, stage),
            "why": why,
            "how_to_fix": how.strip(),
            "error": record,
            "attempts": errors,
            "files": {display(n): str(Path(dst).relative_to(self.inbox)) for n, (_, dst) in zip(names, moves)},
            "rules_version": row.rules_version or self.rules.version,
            "rules_hash": row.rules_hash or self.rules.hash,
            "failed_at": now_iso(),
            "log": str(self.logs_dir / "watch.log"),
            "error_file": str(error_file),
        }
        unsafe = [n for n in names if unsafe_reason(n)]
        if unsafe:  # the exact bytes of names that had to be replaced, so nothing about them is lost
            document["original_names_hex"] = {display(n): name_bytes(n).hex() for n in unsafe}
        self.journal.failing(row.id, moves=moves, error=document, errors=errors)
        self._try_moves(self.journal.get(row.id))

    def _complete_fail(self, row: JobRow) -> None:
        assert self.journal is not None and row.error is not None
        self._guard_folders()
        atomic_write_json(Path(row.error["error_file"]), row.error, sort_keys=True)
        _apply_moves(row.moves)
        self._cleanup(row)
        self.journal.failed(row.id)
        self.summary.failed += 1
        logger.error("job {} ({}) failed while {}: {} -> {}", row.id, display(row.name), row.error["what_failed"],
                     display(row.error["why"]), display(str(Path(row.error["error_file"]).relative_to(self.inbox))))

    def _cleanup(self, row: JobRow) -> None:
        shutil.rmtree(self._staging_dir(row), ignore_errors=True)
        if row.claim_dir:
            folder = self.inbox / row.claim_dir
            try:
                folder.rmdir()  # only when empty: never delete a user's file
            except FileNotFoundError:
                pass
            except OSError:
                logger.warning("job {}: {} is not empty; left in place", row.id, folder)

    # ------------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Finish or undo whatever a previous watcher was doing when it stopped. One row's trouble
        (a folder not writable yet) leaves that row for a later try; it never stops the start."""
        journal = self.journal
        assert journal is not None
        self._interrupted = journal.interrupted_inspections()
        for name, count in self._interrupted.items():
            logger.warning("recovery: the watcher stopped while reading {} ({} time(s))", display(name), count)
        for row in journal.jobs(*ACTIVE_STATES):
            try:
                self._recover_row(row)
            except Exception:  # noqa: BLE001
                logger.exception("recovery: job {} ({}) could not be recovered now; it is tried again", row.id,
                                 display(row.name))
                with contextlib.suppress(Exception):
                    if row.state in ("finishing", "failing"):
                        journal.retry_later(row.id, row.state, next_attempt_at=time.time() + 1.0)
        try:
            self._recover_orphans()
        except Exception:  # noqa: BLE001
            logger.exception("recovery: the folders in processing/ could not all be handed back")
        self._held = {os.path.basename(source) for row in journal.jobs("finishing", "failing")
                      for source, _target in row.moves if os.path.dirname(source) == str(self.inbox)}

    def _recover_row(self, row: JobRow) -> None:
        journal = self.journal
        assert journal is not None
        if row.state == "claiming":
            if row.kind == "reject":
                self._fail(row, DropFolderError("rejected before the watcher stopped", path=row.files[0]),
                           stage="discovery", transient=False)
                return
            if row.claim_dir is None:
                row.claim_dir = f"processing/{row.id:06d}-{_safe_component(row.name)}"
                journal.set_claim_dir(row.id, row.claim_dir)
            logger.info("recovery: job {} ({}) was being claimed; completing the claim", row.id, display(row.name))
            self._complete_claim(journal.get(row.id))
        elif row.state == "running":
            shutil.rmtree(self._staging_dir(row), ignore_errors=True)
            error = LatentSyncError("the watcher stopped during this job (killed, crashed, hung or the machine went "
                                    "down)", hint="if this repeats, the job itself may crash or hang the process: "
                                                  "check logs/watch.log")
            record = _error_dict(error, stage="run", attempt=row.attempts, transient=True)
            if row.attempts >= row.max_attempts:
                self._fail(row, error, stage="recovery", transient=True, record=record)
            else:
                logger.warning("recovery: job {} ({}) was interrupted during attempt {}; re-queued",
                               row.id, display(row.name), row.attempts)
                journal.record_error(row.id, "queued", record, row.errors + [record], next_attempt_at=0.0)
        elif row.state == "queued":
            shutil.rmtree(self._staging_dir(row), ignore_errors=True)
        elif row.state in ("finishing", "failing"):
            logger.info("recovery: job {} ({}) was moving its files; completing", row.id, display(row.name))
            self._try_moves(row)

    def _recover_orphans(self) -> None:
        """Folders in processing/ no active journal row owns (a lost journal): hand their files back to INBOX."""
        assert self.journal is not None
        owned = {Path(r.claim_dir).name for r in self.journal.jobs(*ACTIVE_STATES) if r.claim_dir}
        for folder in sorted(self.processing.iterdir()) if self.processing.is_dir() else []:
            if folder.name in owned or not folder.is_dir() or folder.is_symlink():
                continue
            for entry in sorted(folder.iterdir()):
                target = self.inbox / entry.name
                if os.path.lexists(target):
                    suffix = self._free_names(self.inbox, [entry.name])
                    target = self.inbox / _suffixed(entry.name, suffix)
                try:
                    os.rename(entry, target)
                except OSError as error:
                    logger.error("recovery: cannot return {} to INBOX ({})", entry, error.strerror or error)
                    continue
                logger.warning("recovery: {} had no journal entry; returned to INBOX as {}", display(str(entry)),
                               display(target.name))
            try:
                folder.rmdir()
            except OSError:
                pass
        for folder in sorted(self.staging_root.iterdir()) if self.staging_root.is_dir() else []:
            if folder.name not in owned:
                shutil.rmtree(folder, ignore_errors=True)


def _apply_moves(moves: list[list[str]]) -> None:
    """Rename each source to its target; a move already made (source gone, target present) is skipped."""
    for source, target in moves:
        if os.path.lexists(source):
            if os.path.lexists(target):
                raise FileExistsError(f"{target} already exists; refusing to overwrite it with {source}")
            os.rename(source, target)
        elif not os.path.lexists(target):
            logger.warning("{} is gone; nothing to move to {}", display(source), display(target))


def _renamed_error(error: InvalidInputError, claimed: Path, plan_name: str) -> DropFolderError:
    """An engine error about the claimed copy of a plan, re-worded to name the file the user dropped."""
    message = error.message.replace(str(claimed), plan_name).replace(str(claimed.parent) + os.sep, "")
    return DropFolderError(message, path=plan_name, hint=error.hint)


def load_plan_specs(path: Path) -> list[JobSpec]:
    """The engine's plan loader (schema validation, every problem with file, line and field)."""
    from ..engine import load_plan_file  # lazily: keeps `import latentsync.watch` cheap

    return list(load_plan_file(path))
