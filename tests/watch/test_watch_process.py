"""The watcher as a real process (`python -m latentsync.cli.run watch`): SIGKILL mid-job then
restart, and SIGTERM that re-queues the current job and exits cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from latentsync.atomic import is_partial_name
from latentsync.paths import REPO_ROOT
from latentsync.testing.fake_pipeline import make_fake_audio, make_fake_video
from latentsync.watch import Journal
from watch_helpers import assert_invariants, digests, outputs, wait_until


def start_watcher(inbox: Path, outbox: Path, rules: Path, *extra: str, chunk_seconds: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               LATENTSYNC_FAKE_CHUNK_SECONDS=str(chunk_seconds), LATENTSYNC_FAKE_CHUNKS="10")
    command = [sys.executable, "-m", "latentsync.cli.run", "watch", str(inbox), "--out", str(outbox),
               "--rules", str(rules), "--executor", "latentsync.testing.fake_pipeline:slow_fake_pipeline()",
               "--rules-loader", "latentsync.testing.fake_pipeline:fake_load_ruleset",
               "--pair-wait", "0.1", "--settle", "0.1", "--retry-delay", "0", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def partial_output_in_staging(outbox: Path) -> bool:
    staging = outbox / ".staging"
    return staging.is_dir() and any(is_partial_name(p.name) and p.stat().st_size > 0 for p in staging.rglob("*"))


def test_sigkill_mid_job_then_restart_loses_nothing(drop):
    inbox, outbox, rules = drop
    sources = [make_fake_video(inbox / "a.mp4", seed=1), make_fake_audio(inbox / "a.wav", seed=1),
               make_fake_video(inbox / "b.mp4", seed=2), make_fake_video(inbox / "c.mp4", seed=3)]
    originals = digests(*sources)
    process = start_watcher(inbox, outbox, rules, chunk_seconds=0.3)
    try:
        wait_until(lambda: partial_output_in_staging(outbox), timeout=20)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert outputs(outbox) == [], "no output may appear in OUTBOX before it is complete"
    assert partial_output_in_staging(outbox), "the kill left a half-written file (in staging only)"

    restarted = start_watcher(inbox, outbox, rules, "--once", chunk_seconds=0)
    log, _ = restarted.communicate(timeout=30)
    assert restarted.returncode == 0, log
    assert "was interrupted during attempt 1; re-queued" in log
    assert outputs(outbox) == ["a.mp4", "b.mp4", "c.mp4"]
    assert_invariants(inbox, outbox, originals)
    journal = Journal(inbox / ".latentsync" / "journal.sqlite3")
    rows = journal.jobs()
    assert sorted(r.state for r in rows) == ["done", "done", "done"]
    assert sorted(r.attempts for r in rows) == [1, 1, 2], "the killed job counts one interrupted attempt"


def test_sigterm_requeues_the_current_job_and_exits_cleanly(drop):
    inbox, outbox, rules = drop
    sources = [make_fake_video(inbox / "long.mp4", seed=4)]
    originals = digests(*sources)
    process = start_watcher(inbox, outbox, rules, chunk_seconds=0.3)
    try:
        wait_until(lambda: partial_output_in_staging(outbox), timeout=20)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log
    assert time.monotonic() - sent < 5, "stops at the next chunk, not at the end of the job"
    assert "re-queued: cancelled on stop" in log
    (row,) = Journal(inbox / ".latentsync" / "journal.sqlite3").jobs()
    assert (row.state, row.attempts) == ("queued", 0), "a stop is not a failed attempt"
    assert (inbox / row.claim_dir / "long.mp4").is_file() and outputs(outbox) == []
    assert not any((outbox / ".staging").iterdir())

    restarted = start_watcher(inbox, outbox, rules, "--once", chunk_seconds=0)
    log, _ = restarted.communicate(timeout=30)
    assert restarted.returncode == 0, log
    assert outputs(outbox) == ["long.mp4"]
    report = json.loads((outbox / "long.mp4.report.json").read_text())
    assert report["rules_version"] == "v1"
    assert_invariants(inbox, outbox, originals)
