"""The drop folder's journal: one SQLite row per job, the source of truth.

Every state change is committed before the file operation it announces, and
every file operation is recorded as a list of planned moves first, so a watcher
killed at any instant can redo (or finish) exactly what it was doing when it
restarts. Nothing is processed twice: a file leaves INBOX's top level the moment
it is claimed, and a claimed job runs again only while its row says so.

States:
    claiming  -> the job's files are being renamed into processing/
    queued    -> waiting to run (first time, after a transient failure, or re-queued on stop)
    running   -> the pipeline has it (a row found here at start-up was interrupted)
    finishing -> outputs are complete in staging; planned moves into OUTBOX and done/
                 (retried with backoff while OUTBOX or done/ cannot be written)
    failing   -> planned moves into failed/ plus an error file (retried the same way)
    done, failed -> terminal
    abandoned -> terminal: a file of the job vanished while it was being claimed (another
                 watcher, or the user, took it); the files already moved went back to INBOX

File names are stored byte-exactly: a name that is not valid UTF-8 (Python holds its
bytes as lone surrogates) is stored as a BLOB of its bytes; inside the JSON columns
such characters are escaped (`\\udcXX`) and decode back to the same bytes.

`inspections` records a dropped file the watcher is reading before any job exists
for it (a plan being parsed): a watcher killed while reading it finds the row at
start-up and counts an attempt, so a file that crashes the process cannot do so for
ever.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ACTIVE_STATES = ("claiming", "queued", "running", "finishing", "failing")
TERMINAL_STATES = ("done", "failed", "abandoned")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    files           TEXT NOT NULL,
    claim_dir       TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    output          TEXT,
    moves           TEXT,
    report          TEXT,
    error           TEXT,
    errors          TEXT NOT NULL DEFAULT '[]',
    rules_version   TEXT,
    rules_hash      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  INTEGER NOT NULL,
    at      REAL NOT NULL,
    state   TEXT NOT NULL,
    detail  TEXT
);
CREATE TABLE IF NOT EXISTS inspections (
    name        BLOB PRIMARY KEY,
    started_at  REAL NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0
);
"""


def _text(value: Optional[str]) -> Any:
    """A name for a TEXT column: itself when it is valid UTF-8, else its exact bytes (a BLOB)."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(value)
    return value


def _untext(value: Any) -> Any:
    return os.fsdecode(value) if isinstance(value, bytes) else value


@dataclass
class JobRow:
    id: int
    name: str
    kind: str  # "pair" | "plan" | "reject"
    state: str
    files: list[str]
    claim_dir: Optional[str]
    attempts: int
    max_attempts: int
    next_attempt_at: float
    output: Optional[str]
    moves: list[list[str]]
    report: Optional[dict[str, Any]]
    error: Optional[dict[str, Any]]
    errors: list[dict[str, Any]] = field(default_factory=list)
    rules_version: Optional[str] = None
    rules_hash: Optional[str] = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: Optional[float] = None
    finished_at: Optional[float] = None


def _loads(text: Optional[str], default: Any) -> Any:
    return default if text is None else json.loads(text)


class Journal:
    """A thin, single-threaded wrapper around the SQLite file (WAL mode)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per transition.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed transition survives power loss, not only a killed process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- reading -----------------------------------------------------------

    def _row(self, record: sqlite3.Row) -> JobRow:
        return JobRow(
            id=record["id"],
            name=_untext(record["name"]),
            kind=record["kind"],
            state=record["state"],
            files=_loads(record["files"], []),
            claim_dir=_untext(record["claim_dir"]),
            attempts=record["attempts"],
            max_attempts=record["max_attempts"],
            next_attempt_at=record["next_attempt_at"],
            output=_untext(record["output"]),
            moves=_loads(record["moves"], []),
            report=_loads(record["report"], None),
            error=_loads(record["error"], None),
            errors=_loads(record["errors"], []),
            rules_version=record["rules_version"],
            rules_hash=record["rules_hash"],
            created_at=record["created_at"],
            updated_at=record["updated_at"],
            started_at=record["started_at"],
            finished_at=record["finished_at"],
        )

    def get(self, job_id: int) -> JobRow:
        record = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if record is None:
            raise KeyError(job_id)
        return self._row(record)

    def jobs(self, *states: str) -> list[JobRow]:
        if states:
            marks = ",".join("?" for _ in states)
            cursor = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states)
        else:
            cursor = self._db.execute("SELECT * FROM jobs ORDER BY id")
        return [self._row(record) for record in cursor.fetchall()]

    def next_runnable(self, now: float) -> Optional[JobRow]:
        record = self._db.execute(
            "SELECT * FROM jobs WHERE state = 'queued' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT 1",
            (now,),
        ).fetchone()
        return None if record is None else self._row(record)

    def next_wakeup(self) -> Optional[float]:
        """When the earliest queued job becomes runnable (None: nothing queued)."""
        record = self._db.execute("SELECT MIN(next_attempt_at) FROM jobs WHERE state = 'queued'").fetchone()
        return record[0]

    def events(self, job_id: Optional[int] = None) -> list[tuple[int, str, Optional[str]]]:
        if job_id is None:
            cursor = self._db.execute("SELECT job_id, state, detail FROM events ORDER BY id")
        else:
            cursor = self._db.execute("SELECT job_id, state, detail FROM events WHERE job_id = ? ORDER BY id", (job_id,))
        return [(record[0], record[1], _untext(record[2])) for record in cursor.fetchall()]

    def next_retry(self) -> Optional[float]:
        """When the earliest finishing / failing row waiting for a folder is due (None: none waits)."""
        record = self._db.execute("SELECT MIN(next_attempt_at) FROM jobs WHERE state IN ('finishing', 'failing') "
                                  "AND next_attempt_at > 0").fetchone()
        return record[0]

    def pending_retries(self, now: float) -> list[JobRow]:
        """Rows whose planned moves (into OUTBOX, done/ or failed/) are due to be tried again."""
        cursor = self._db.execute("SELECT * FROM jobs WHERE state IN ('finishing', 'failing') AND next_attempt_at <= ? "
                                  "ORDER BY next_attempt_at, id", (now,))
        return [self._row(record) for record in cursor.fetchall()]

    # -- inspections: dropped files being read before a job exists for them --

    def begin_inspection(self, name: str) -> None:
        self._db.execute("INSERT INTO inspections (name, started_at) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET started_at = excluded.started_at",
                         (os.fsencode(name), time.time()))

    def end_inspection(self, name: str) -> None:
        self._db.execute("DELETE FROM inspections WHERE name = ?", (os.fsencode(name),))

    def interrupted_inspections(self) -> dict[str, int]:
        """At start-up: every inspection left open counts one more interruption; name -> count."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("UPDATE inspections SET interrupted = interrupted + 1")
            rows = self._db.execute("SELECT name, interrupted FROM inspections").fetchall()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return {os.fsdecode(bytes(name)): count for name, count in rows}

    def inspection_count(self, name: str) -> int:
        row = self._db.execute("SELECT interrupted FROM inspections WHERE name = ?", (os.fsencode(name),)).fetchone()
        return int(row[0]) if row else 0

    # -- writing -----------------------------------------------------------

    def _transition(self, job_id: int, state: str, detail: Optional[str] = None, **columns: Any) -> None:
        now = time.time()
        assignments = ["state = ?", "updated_at = ?"]
        values: list[Any] = [state, now]
        for column, value in columns.items():
            if column in ("files", "moves", "report", "error", "errors") and value is not None:
                value = json.dumps(value, sort_keys=True)
            elif column in ("output", "claim_dir", "name"):
                value = _text(value)
            assignments.append(f"{column} = ?")
            values.append(value)
        values.append(job_id)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ?", values)
            self._db.execute(
                "INSERT INTO events (job_id, at, state, detail) VALUES (?, ?, ?, ?)", (job_id, now, state, _text(detail))
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def create(self, *, name: str, kind: str, files: list[str], max_attempts: int, state: str = "claiming",
               output: Optional[str] = None) -> int:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO jobs (name, kind, state, files, max_attempts, output, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_text(name), kind, state, json.dumps(files), max_attempts, _text(output), now, now),
            )
            job_id = int(cursor.lastrowid)
            self._db.execute(
                "INSERT INTO events (job_id, at, state, detail) VALUES (?, ?, ?, ?)",
                (job_id, now, state, _text(", ".join(files))),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return job_id

    def set_claim_dir(self, job_id: int, claim_dir: str) -> None:
        self._transition(job_id, "claiming", "claim dir " + claim_dir, claim_dir=claim_dir)

    def queued(self, job_id: int, *, next_attempt_at: float = 0.0, detail: Optional[str] = None, **columns: Any) -> None:
        self._transition(job_id, "queued", detail, next_attempt_at=next_attempt_at, **columns)

    def running(self, job_id: int, *, attempts: int, rules_version: Optional[str], rules_hash: Optional[str]) -> None:
        self._transition(
            job_id,
            "running",
            f"attempt {attempts}",
            attempts=attempts,
            started_at=time.time(),
            rules_version=rules_version,
            rules_hash=rules_hash,
        )

    def finishing(self, job_id: int, *, output: str, moves: list[list[str]], report: dict[str, Any]) -> None:
        self._transition(job_id, "finishing", output, output=output, moves=moves, report=report)

    def failing(self, job_id: int, *, moves: list[list[str]], error: dict[str, Any], errors: list[dict[str, Any]]) -> None:
        self._transition(job_id, "failing", error.get("message"), moves=moves, error=error, errors=errors)

    def done(self, job_id: int) -> None:
        self._transition(job_id, "done", None, finished_at=time.time())

    def failed(self, job_id: int) -> None:
        self._transition(job_id, "failed", None, finished_at=time.time())

    def record_error(self, job_id: int, state: str, error: dict[str, Any], errors: list[dict[str, Any]], **columns: Any) -> None:
        self._transition(job_id, state, error.get("message"), error=error, errors=errors, **columns)

    def retry_later(self, job_id: int, state: str, *, next_attempt_at: float, detail: Optional[str] = None) -> None:
        """Keep `state` (finishing / failing / queued) and try again at `next_attempt_at` (no attempt counted)."""
        self._transition(job_id, state, detail, next_attempt_at=next_attempt_at)

    def abandoned(self, job_id: int, detail: str) -> None:
        self._transition(job_id, "abandoned", detail, finished_at=time.time())
