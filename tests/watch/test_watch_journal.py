"""The SQLite journal: WAL mode, transitions with history, runnable order."""
from __future__ import annotations

import sqlite3
import time

from latentsync.watch.journal import Journal


def test_journal_is_wal_and_records_transitions(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    job = journal.create(name="clip", kind="pair", files=["clip.mp4", "clip.wav"], max_attempts=3, output="clip.mp4")
    journal.set_claim_dir(job, "processing/000001-clip")
    journal.queued(job)
    journal.running(job, attempts=1, rules_version="v1", rules_hash="abc")
    row = journal.get(job)
    assert (row.state, row.attempts, row.rules_hash, row.files) == ("running", 1, "abc", ["clip.mp4", "clip.wav"])
    assert [state for _, state, _ in journal.events(job)] == ["claiming", "claiming", "queued", "running"]
    journal.close()
    mode = sqlite3.connect(tmp_path / "j.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_next_runnable_respects_backoff_and_order(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    first = journal.create(name="a", kind="pair", files=["a.mp4"], max_attempts=3)
    second = journal.create(name="b", kind="pair", files=["b.mp4"], max_attempts=3)
    now = time.time()
    journal.queued(first, next_attempt_at=now + 60)  # backing off
    journal.queued(second)
    assert journal.next_runnable(now).id == second
    journal.running(second, attempts=1, rules_version=None, rules_hash=None)
    assert journal.next_runnable(now) is None
    assert journal.next_runnable(now + 61).id == first
    assert abs(journal.next_wakeup() - (now + 60)) < 1e-3


def test_journal_survives_reopen(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    job = journal.create(name="a", kind="pair", files=["a.mp4"], max_attempts=2)
    journal.failing(job, moves=[["x", "y"]], error={"message": "boom"}, errors=[{"message": "boom"}])
    journal.close()
    again = Journal(tmp_path / "j.sqlite3")
    row = again.get(job)
    assert row.state == "failing" and row.moves == [["x", "y"]] and row.error == {"message": "boom"}
