"""The drop-folder watcher: INBOX in, OUTBOX out, a journal in between, nothing lost.

Life of a job (every arrow is committed to the journal before the file operation):

    INBOX/clip.mp4 (+ clip.wav)        ready: closed or moved in (inotify), or size and
        |  claim: rename               mtime stable across polls (--poll / start-up)
        v
    INBOX/processing/000042-clip/      queued -> running (pipeline writes into
        |                              OUTBOX/.staging/000042-clip/)
        +-- ok ------> OUTBOX/clip.mp4 + clip.mp4.report.json, inputs -> INBOX/done/
        +-- transient error, attempts left -> queued again (backoff)
        +-- permanent error or out of attempts -> INBOX/failed/clip.mp4 + clip.error.json

The pipeline is injectable (`executor`, `latentsync.runner.run_job` by default)
and so is the rules loader; fast fakes with the same interfaces stand in for
both in tests (latentsync.testing.fake_pipeline).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import shutil
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
    DropFolderError,
    DropPlan,
    check_claimed_file,
    classify,
    describe_link,
    parse_drop_plan,
    stem_of,
)
from .journal import ACTIVE_STATES, Journal, JobRow
from .rules_reload import RulesLoader, RulesReloader, default_rules_loader

Executor = Callable[..., JobReport]  # run_job's signature


def default_executor(spec: JobSpec, **kwargs: Any) -> JobReport:
    from ..runner import run_job  # lazily: the runner pulls in torch

    return run_job(spec, **kwargs)


class WatchFolderBusy(InvalidInputError):
    """Another watcher already holds this INBOX."""


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
    base = stem_of(name)
    return base + suffix + name[len(base):]


def _error_dict(error: BaseException, *, stage: str, attempt: int, transient: bool) -> dict[str, Any]:
    """One attempt's failure as the journal and the error file keep it."""
    return error_record(error, stage=stage, attempt=attempt, transient=transient, at=now_iso())


_WHAT_FAILED = {
    "discovery": "checking the dropped files before claiming them",
    "validate": "checking the claimed files and the plan",
    "run": "running the lip-sync pipeline",
    "finish": "moving the finished output into OUTBOX",
    "recovery": "recovering after the watcher stopped",
}


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
        self._lock_handle: Any = None
        self._observer: Any = None
        self._log_sink: Optional[int] = None
        self._once = False
        self._close_events = False  # inotify tells when a writer closes a file
        self._last_rescan = 0.0
        self.ready = threading.Event()  # set once start-up (recovery, first scan) is over

    # ------------------------------------------------------------------ control

    def request_stop(self, reason: str = "stop requested") -> None:
        """Thread-safe: finish or re-queue the current job, then return from run()."""
        if not self._stop.is_set():
            logger.info("{}: stopping after the current chunk (the job is re-queued if unfinished)", reason)
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
        if not self.inbox.is_dir():
            raise InvalidInputError("INBOX is not a folder", path=str(self.config.inbox), hint="create it or check the path")
        if self.outbox == self.inbox or self.inbox in self.outbox.parents and self.outbox.relative_to(self.inbox).parts[0] in (
            "processing", "done", "failed", "logs", ".latentsync"
        ):
            raise InvalidInputError("OUTBOX must not be INBOX or one of its working folders", path=str(self.config.outbox),
                                    hint="use a separate folder, e.g. --out ../outbox")
        for folder in (self.processing, self.done_dir, self.failed_dir, self.state_dir, self.outbox, self.staging_root):
            folder.mkdir(parents=True, exist_ok=True)

    def _acquire_lock(self) -> None:
        path = self.state_dir / "watch.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise WatchFolderBusy(f"another watcher (pid {holder}) is already watching this INBOX",
                                  path=str(self.config.inbox), hint="stop it first, or watch another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _start_logging(self) -> None:
        if not self.config.log_file:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._log_sink = logger.add(
            self.logs_dir / "watch.log",
            level=self.config.log_level,
            rotation="10 MB",
            retention=5,
            backtrace=False,
            diagnose=False,  # never dump local variables into a shared folder
            format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
        )

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

    # ------------------------------------------------------------------ main loop

    def run(self, *, once: bool = False) -> WatchSummary:
        """Watch until stopped; with `once`, process what is in INBOX now and return."""
        self._once = once
        self._check_folders()
        self._acquire_lock()
        self._start_logging()
        signals = contextlib.ExitStack()  # closed in `finally`, before the lock and the log go
        signals.enter_context(stop_on_signals(self._on_signal, stop=self._stop))
        try:
            self.journal = Journal(self.state_dir / "journal.sqlite3")
            self.rules.load_initial()
            logger.info("watching {} -> {} ({}{})", self.inbox, self.outbox,
                        "poll every %gs" % self.config.poll if self.config.poll is not None else "inotify",
                        ", once" if once else "")
            self.recover()
            if not once:
                self._start_observer()
            started = time.monotonic()
            self._rescan(started)
            self.ready.set()
            while not self._stop.is_set():
                now = time.monotonic()
                self._drain_events(now)
                if once or now - self._last_rescan >= self.config.rescan_interval:
                    self._rescan(now)
                self._update_stability(now)
                self.rules.maybe_reload(now)
                decided = self._discover_and_claim(now)
                if self._stop.is_set():
                    break
                row = self.journal.next_runnable(time.time())
                if row is not None:
                    self._run_one(row)
                    continue
                wait = self.config.tick
                wakeup = self.journal.next_wakeup()
                if once:
                    idle_for = now - started
                    if not decided and wakeup is None and idle_for >= self._stability_window() + self.config.tick:
                        break
                if wakeup is not None:
                    wait = min(wait, max(0.0, wakeup - time.time()))
                try:
                    tag, event = self._events.get(timeout=max(wait, 0.001))
                    self._handle_event(tag, event, time.monotonic())
                except queue.Empty:
                    pass
        finally:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=5)
                self._observer = None
            if self.journal is not None:
                self.journal.close()
            signals.close()  # the previous SIGINT/SIGTERM handlers are back
            logger.info("watcher stopped: {} done, {} failed, {} re-queued", self.summary.done, self.summary.failed,
                        self.summary.requeued)
            if self._log_sink is not None:
                logger.remove(self._log_sink)
                self._log_sink = None
            self._release_lock()
        return self.summary

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
            return
        kind = event.event_type
        polling = not self._close_events
        if kind == "moved":
            source = self._top_name(event.src_path)
            if source is not None:
                self._forget(source)
            dest = self._top_name(event.dest_path)
            if dest is not None:
                tracked = self._tracked.setdefault(dest, _Tracked(first_seen=now))
                tracked.stat = None
                if polling:
                    tracked.ready_at, tracked.need_close = None, False
                else:  # a rename is atomic: the file arrived complete
                    tracked.ready_at, tracked.need_close = now, False
            return
        name = self._top_name(event.src_path)
        if name is None:
            return
        if kind != "deleted" and not os.path.lexists(self.inbox / name):
            return  # a late event about a file already claimed or removed
        if kind == "deleted":
            self._forget(name)
        elif kind in ("created", "modified"):
            tracked = self._tracked.setdefault(name, _Tracked(first_seen=now))
            tracked.ready_at = None
            tracked.stat = None
            tracked.need_close = not polling
        elif kind == "closed" and not polling:
            tracked = self._tracked.setdefault(name, _Tracked(first_seen=now))
            tracked.ready_at, tracked.need_close = now, False

    def _forget(self, name: str) -> None:
        self._tracked.pop(name, None)
        self._plan_cache.pop(name, None)

    def _rescan(self, now: float) -> None:
        self._last_rescan = now
        present = set()
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) or classify(entry.name) == "ignore":
                continue
            present.add(entry.name)
            if entry.name not in self._tracked:
                self._tracked[entry.name] = _Tracked(first_seen=now)
        for name in list(self._tracked):
            if name not in present:
                self._forget(name)

    def _update_stability(self, now: float) -> None:
        window = self._stability_window()
        for name, tracked in self._tracked.items():
            if tracked.ready_at is not None or tracked.need_close:
                continue
            try:
                info = os.lstat(self.inbox / name)
            except FileNotFoundError:
                continue
            signature = (info.st_size, info.st_mtime_ns, info.st_ino)
            if signature != tracked.stat:
                tracked.stat, tracked.stat_since = signature, now
            elif now - tracked.stat_since >= window:
                tracked.ready_at = now

    # ------------------------------------------------------------------ discovery

    def _parse_plan_cached(self, name: str) -> Any:
        """DropPlan or DropFolderError, re-read only when the file changes."""
        path = self.inbox / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        key = (info.st_size, info.st_mtime_ns, info.st_ino)
        cached = self._plan_cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            result: Any = parse_drop_plan(path)
        except DropFolderError as error:
            result = error
        except OSError as error:
            result = DropFolderError(f"cannot read the plan: {error.strerror}", path=name, hint="check its permissions")
        self._plan_cache[name] = (key, result)
        return result

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

        for name in sorted(tracked):
            if classify(name) != "plan":
                continue
            if name not in ready:
                held_stems.add(stem_of(name))
                continue
            if os.path.islink(self.inbox / name):
                decisions.append(_Reject(stem_of(name), [name], describe_link(self.inbox / name, self.inbox), "discovery"))
                reserved.add(name)
                continue
            parsed = self._parse_plan_cached(name)
            if parsed is None:
                continue
            if isinstance(parsed, DropFolderError):
                decisions.append(_Reject(stem_of(name), [name], parsed, "discovery"))
                reserved.add(name)
                continue
            plan: DropPlan = parsed
            reserved.add(name)
            reserved.update(plan.inputs)
            missing = [n for n in plan.inputs if n not in tracked]
            pending = [n for n in plan.inputs if n in tracked and n not in ready]
            waited = now - (tracked[name].ready_at or now)
            if missing:
                if once or waited >= self.config.input_wait:
                    present = [n for n in plan.inputs if n in tracked]
                    error = DropFolderError(
                        f"names {', '.join(missing)}, which is not in INBOX"
                        + ("" if once else f" (waited {self.config.input_wait:g} s)"),
                        path=name, hint="drop the plan and the files it names into INBOX together")
                    decisions.append(_Reject(stem_of(name), [name] + present, error, "discovery"))
                continue
            if pending:
                continue
            decisions.append(_Claim("plan", stem_of(name), [name] + plan.inputs, plan.output))

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
            reserved.add(name)
            reserved.update(audios)
            if len(audios) > 1:
                error = DropFolderError(f"has {len(audios)} audio files beside it ({', '.join(sorted(audios))}); which one is meant?",
                                        path=name, hint="keep one audio file per clip, or drop a .plan.yaml naming the audio")
                decisions.append(_Reject(stem, [name] + sorted(audios), error, "discovery"))
                continue
            decisions.append(_Claim("pair", stem, [name] + audios, f"{stem}.mp4"))

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
                        logger.warning("{}: audio without a video named {}.*; left in INBOX", name, stem_of(name))
                    continue
                if waited >= self.config.input_wait:
                    error = DropFolderError(f"no video named {stem_of(name)}.* arrived within {self.config.input_wait:g} s",
                                            path=name, hint=f"drop {stem_of(name)}.mp4 together with its audio")
                    decisions.append(_Reject(stem_of(name), [name], error, "discovery"))
            elif kind == "unknown":
                error = DropFolderError("is not a job file", path=name,
                                        hint="drop a video (.mp4, .mov, ...), its audio (.wav, .mp3, .m4a) or a NAME.plan.yaml")
                decisions.append(_Reject(stem_of(name), [name], error, "discovery"))
        return decisions

    def _discover_and_claim(self, now: float) -> bool:
        decisions = self._decide(now)
        for decision in decisions:
            for name in decision.files:
                self._forget(name)
            if isinstance(decision, _Claim):
                self._claim(decision)
            else:
                assert self.journal is not None
                job_id = self.journal.create(name=decision.name, kind="reject", files=decision.files, max_attempts=1)
                self.summary.job_ids.append(job_id)
                self._fail(self.journal.get(job_id), decision.error, stage=decision.what, transient=False)
        return bool(decisions)

    # ------------------------------------------------------------------ claim

    def _claim(self, claim: _Claim) -> int:
        journal = self.journal
        assert journal is not None
        job_id = journal.create(name=claim.name, kind=claim.kind, files=claim.files,
                                max_attempts=self.config.retries + 1, output=claim.output)
        self.summary.job_ids.append(job_id)
        claim_dir = f"processing/{job_id:06d}-{_safe_component(claim.name)}"
        journal.set_claim_dir(job_id, claim_dir)
        self._complete_claim(journal.get(job_id))
        logger.info("job {} claimed: {}", job_id, ", ".join(claim.files))
        return job_id

    def _complete_claim(self, row: JobRow) -> None:
        """Rename every file of the job into its claim folder (idempotent: safe to redo after a crash)."""
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
                logger.warning("job {}: {} vanished before it was claimed", row.id, name)
        self.journal.queued(row.id, detail="claimed")

    # ------------------------------------------------------------------ run

    def _staging_dir(self, row: JobRow) -> Path:
        return self.staging_root / Path(row.claim_dir or f"{row.id:06d}").name

    def _run_one(self, row: JobRow) -> None:
        journal = self.journal
        assert journal is not None
        attempt = row.attempts + 1
        ruleset = self.rules.current
        journal.running(row.id, attempts=attempt, rules_version=self.rules.version, rules_hash=self.rules.hash)
        label = f"job {row.id} ({row.name})"
        logger.info("{}: attempt {}/{} with rules {}", label, attempt, row.max_attempts, self.rules.version)
        staging = self._staging_dir(row)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        stage = "validate"
        started = time.perf_counter()
        try:
            spec = self._build_spec(row, staging)
            stage = "run"
            report = self.executor(
                spec,
                ruleset=ruleset,
                progress=self._progress_logger(label),
                cancel=self._stop.is_set,
                benchmark_cache=self.config.benchmark_cache,
            )
        except KeyboardInterrupt:
            self._requeue(row, attempt, "interrupted")
            raise
        except Exception as error:  # noqa: BLE001 — every failure is journaled, none escapes
            verdict = classify_error(error)
            shutil.rmtree(staging, ignore_errors=True)
            if verdict == CANCEL:
                self._requeue(row, attempt, "cancelled on stop")
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

    def _requeue(self, row: JobRow, attempt: int, why: str) -> None:
        assert self.journal is not None
        shutil.rmtree(self._staging_dir(row), ignore_errors=True)
        self.journal.queued(row.id, detail=why, attempts=attempt - 1)  # a stop is not a failed attempt
        self.summary.requeued += 1
        logger.info("job {} ({}) re-queued: {}", row.id, row.name, why)

    def _progress_logger(self, label: str) -> Callable[[str, int, int], None]:
        last = {"stage": None}

        def progress(stage: str, done: int, total: int) -> None:
            if stage != last["stage"]:
                last["stage"] = stage
                logger.info("{}: {} ({} steps)", label, stage, total)
            logger.debug("{}: {} {}/{}", label, stage, done, total)

        return progress

    def _build_spec(self, row: JobRow, staging: Path) -> JobSpec:
        claim = self.inbox / (row.claim_dir or "")
        for name in row.files:
            check_claimed_file(claim / name, self.inbox)
        output = staging / (row.output or f"{row.name}.mp4")
        if row.kind == "pair":
            video, audio = row.files[0], (row.files[1] if len(row.files) > 1 else None)
            spec = JobSpec(video=claim / video, output=output, audio=claim / audio if audio else None, name=row.name)
            if self.config.weights is not None:
                spec.weights = self.config.weights
            if self.config.goal is not None:
                spec.goal = self.config.goal
            return spec
        plan = parse_drop_plan(claim / row.files[0])  # again, from the claimed bytes
        if plan.inputs != row.files[1:]:
            raise DropFolderError("the plan changed while it was being claimed", path=row.files[0],
                                  hint="drop the plan again once it is saved")
        return self._spec_from_drop_plan(row, plan, claim, output)

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
        staged_report = staged_output.with_name(staged_output.name + ".report.json")
        extras = sorted(p.name for p in staging.iterdir()
                        if p.name.startswith(staged_output.name) and p.name not in (staged_output.name, staged_report.name)
                        and not is_partial_name(p.name))
        tails = [e[len(staged_output.name):] for e in extras]
        suffix = self._free_names(self.outbox, [desired],
                                  lambda s: [_suffixed(desired, s) + t for t in tails + [".report.json"]])
        final_output = _suffixed(desired, suffix)
        final_report = self.outbox / (final_output + ".report.json")
        moves = [[str(staging / e), str(self.outbox / (final_output + t))] for e, t in zip(extras, tails)]
        moves.append([str(staged_output), str(self.outbox / final_output)])  # the video last: it signals "done"
        claim = self.inbox / (row.claim_dir or "")
        done_suffix = self._free_names(self.done_dir, row.files)
        moves += [[str(claim / n), str(self.done_dir / _suffixed(n, done_suffix))] for n in row.files]
        if staged_report.is_file():
            data = json.loads(staged_report.read_text())
        else:
            data = report.to_dict()
        data["output"] = str(self.outbox / final_output)
        if isinstance(data.get("job"), dict):
            # The report names where the inputs and the output finally live, not the work folders.
            final_inputs = {str(claim / n): str(self.done_dir / _suffixed(n, done_suffix)) for n in row.files}
            data["job"].update(output=str(self.outbox / final_output), report=str(final_report))
            for key in ("video", "audio"):
                if data["job"].get(key) in final_inputs:
                    data["job"][key] = final_inputs[data["job"][key]]
        if data.get("rules_version") is None:
            data["rules_version"] = row.rules_version
        if data.get("rules_hash") is None:
            data["rules_hash"] = row.rules_hash
        self.journal.finishing(row.id, output=final_output, moves=moves, report=data)
        try:
            self._complete_finish(self.journal.get(row.id))
        except Exception:  # noqa: BLE001 — the journal holds the plan; the next start completes it
            logger.exception("job {} ({}): moving the finished output failed; it stays 'finishing' and is "
                             "completed when the watcher restarts", row.id, row.name)

    def _complete_finish(self, row: JobRow) -> None:
        """Idempotent: write the report, apply the planned moves, mark done."""
        assert self.journal is not None and row.output is not None
        atomic_write_json(self.outbox / (row.output + ".report.json"), row.report, sort_keys=True)
        _apply_moves(row.moves)
        self._cleanup(row)
        self.journal.done(row.id)
        self.summary.done += 1
        logger.info("job {} ({}) done: {}", row.id, row.name, self.outbox / row.output)

    def _fail(self, row: JobRow, error: BaseException, *, stage: str, transient: bool,
              record: Optional[dict[str, Any]] = None) -> None:
        assert self.journal is not None
        record = record or _error_dict(error, stage=stage, attempt=max(row.attempts, 1), transient=transient)
        errors = row.errors + [record] if record not in row.errors else row.errors
        sources = []
        for name in row.files:
            claimed = self.inbox / row.claim_dir / name if row.claim_dir else None
            if claimed is not None and os.path.lexists(claimed):
                sources.append((name, claimed))
            elif os.path.lexists(self.inbox / name):
                sources.append((name, self.inbox / name))
        names = [n for n, _ in sources]
        suffix = self._free_names(self.failed_dir, names, lambda s: [f"{row.name}{s}.error.json"])
        moves = [[str(path), str(self.failed_dir / _suffixed(n, suffix))] for n, path in sources]
        error_file = self.failed_dir / f"{row.name}{suffix}.error.json"
        if transient:
            how = (record.get("hint") or "") + (" " if record.get("hint") else "") + (
                f"It failed {len(errors)} time(s) with an error that may pass (memory, disk, device); "
                "see logs/watch.log, then drop the files into INBOX again.")
        else:
            how = record.get("hint") or "fix the input named above and drop it into INBOX again"
        document = {
            "job": row.name,
            "job_id": row.id,
            "what_failed": _WHAT_FAILED.get(stage, stage),
            "why": record["message"] if not record.get("path") else f"{Path(record['path']).name}: {record['message']}",
            "how_to_fix": how.strip(),
            "error": record,
            "attempts": errors,
            "files": {n: str(Path(dst).relative_to(self.inbox)) for (n, _), (_, dst) in zip(sources, moves)},
            "rules_version": row.rules_version or self.rules.version,
            "rules_hash": row.rules_hash or self.rules.hash,
            "failed_at": now_iso(),
            "log": str(self.logs_dir / "watch.log"),
            "error_file": str(error_file),
        }
        self.journal.failing(row.id, moves=moves, error=document, errors=errors)
        self._complete_fail(self.journal.get(row.id))

    def _complete_fail(self, row: JobRow) -> None:
        assert self.journal is not None and row.error is not None
        atomic_write_json(Path(row.error["error_file"]), row.error, sort_keys=True)
        _apply_moves(row.moves)
        self._cleanup(row)
        self.journal.failed(row.id)
        self.summary.failed += 1
        logger.error("job {} ({}) failed while {}: {} -> {}", row.id, row.name, row.error["what_failed"],
                     row.error["why"], Path(row.error["error_file"]).relative_to(self.inbox))

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
        """Finish or undo whatever a previous watcher was doing when it stopped."""
        journal = self.journal
        assert journal is not None
        for row in journal.jobs(*ACTIVE_STATES):
            if row.state == "claiming":
                if row.kind == "reject":
                    self._fail(row, DropFolderError("rejected before the watcher stopped", path=row.files[0]),
                               stage="discovery", transient=False)
                    continue
                if row.claim_dir is None:
                    row.claim_dir = f"processing/{row.id:06d}-{_safe_component(row.name)}"
                    journal.set_claim_dir(row.id, row.claim_dir)
                logger.info("recovery: job {} ({}) was being claimed; completing the claim", row.id, row.name)
                self._complete_claim(journal.get(row.id))
            elif row.state == "running":
                shutil.rmtree(self._staging_dir(row), ignore_errors=True)
                error = LatentSyncError("the watcher stopped during this job (killed, crashed or the machine went down)",
                                        hint="if this repeats, the job itself may crash the process: check logs/watch.log")
                record = _error_dict(error, stage="run", attempt=row.attempts, transient=True)
                if row.attempts >= row.max_attempts:
                    self._fail(row, error, stage="recovery", transient=True, record=record)
                else:
                    logger.warning("recovery: job {} ({}) was interrupted during attempt {}; re-queued",
                                   row.id, row.name, row.attempts)
                    journal.record_error(row.id, "queued", record, row.errors + [record], next_attempt_at=0.0)
            elif row.state == "queued":
                shutil.rmtree(self._staging_dir(row), ignore_errors=True)
            elif row.state == "finishing":
                logger.info("recovery: job {} ({}) was moving its output; completing", row.id, row.name)
                self._complete_finish(row)
            elif row.state == "failing":
                logger.info("recovery: job {} ({}) was being moved to failed/; completing", row.id, row.name)
                self._complete_fail(row)
        self._recover_orphans()

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
                os.rename(entry, target)
                logger.warning("recovery: {} had no journal entry; returned to INBOX as {}", entry, target.name)
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
            logger.warning("{} is gone; nothing to move to {}", source, target)


def _renamed_error(error: InvalidInputError, claimed: Path, plan_name: str) -> DropFolderError:
    """An engine error about the claimed copy of a plan, re-worded to name the file the user dropped."""
    message = error.message.replace(str(claimed), plan_name).replace(str(claimed.parent) + os.sep, "")
    return DropFolderError(message, path=plan_name, hint=error.hint)


def load_plan_specs(path: Path) -> list[JobSpec]:
    """The engine's plan loader (schema validation, every problem with file, line and field)."""
    from ..engine import load_plan_file  # lazily: keeps `import latentsync.watch` cheap

    return list(load_plan_file(path))
