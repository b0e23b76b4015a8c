"""The hostile-input corpus against `latentsync-run watch` as a real process: one burst of poison
pills ends exactly once in OUTBOX or failed/ and the watcher restarts cleanly; SIGTERM is honoured
while a job hangs (the restart counts the attempt); a second watcher with its own --state is
refused; unusable folders at start are exit 2."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from latentsync.paths import REPO_ROOT
from latentsync.testing.fake_pipeline import make_fake_audio, make_fake_video, sha256_file
from latentsync.watch import Journal
from watch_helpers import ALIAS_BOMB, error_files, outputs, wait_until


def watch_command(inbox: Path, outbox: Path, rules: Path, *extra: str,
                  executor: str = "latentsync.testing.fake_pipeline:slow_fake_pipeline()") -> list[str]:
    return [sys.executable, "-m", "latentsync.cli.run", "watch", str(inbox), "--out", str(outbox), "--rules", str(rules),
            "--executor", executor, "--rules-loader", "latentsync.testing.fake_pipeline:fake_load_ruleset",
            "--pair-wait", "0.1", "--settle", "0.1", "--retry-delay", "0", *extra]


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                LATENTSYNC_FAKE_CHUNK_SECONDS="0")


def run_once(inbox: Path, outbox: Path, rules: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(watch_command(inbox, outbox, rules, "--once", *extra), env=environment(), capture_output=True,
                          text=True, timeout=timeout)


def test_a_burst_of_poison_pills_ends_exactly_once_and_the_restart_is_clean(drop):
    inbox, outbox, rules = drop
    raw = os.fsencode(inbox)
    (inbox / "bomb.plan.yaml").write_text(ALIAS_BOMB)
    (inbox / "deep.plan.yaml").write_text("video: " + "[" * 50_000 + "]" * 50_000 + "\noutput: o.mp4\n")
    (inbox / "nan.plan.yaml").write_text("video: nanclip.mp4\noutput: n.mp4\noverrides: {guidance_scale: .nan}\n")
    dropped = [make_fake_video(inbox / "bomb.mp4"), make_fake_audio(inbox / "bomb_fr.wav"),
               make_fake_video(inbox / "deep.mp4", seed=1), make_fake_video(inbox / "nanclip.mp4", seed=2),
               make_fake_video(Path(os.fsdecode(os.path.join(raw, b"\xff\xfe.mp4"))), seed=3),
               make_fake_video(inbox / ("long" * 61 + ".mp4"), seed=4),
               make_fake_video(inbox / "talk.mp4", seed=5), make_fake_audio(inbox / "talk.wav", seed=5)]
    dropped += [inbox / f"{n}.plan.yaml" for n in ("bomb", "deep", "nan")]
    os.mkfifo(inbox / "pipe.mp4")
    os.symlink(inbox / "loop.mp4", inbox / "loop.mp4")
    originals = sorted(sha256_file(p) for p in dropped)
    started = time.monotonic()
    first = run_once(inbox, outbox, rules)
    assert first.returncode == 1, first.stderr[-4000:]  # jobs ended in failed/; the watcher itself did fine
    assert time.monotonic() - started < 100
    names = outputs(outbox)
    assert len(names) == 2 and "talk.mp4" in names and any(n.startswith("longlong") for n in names), names
    errors = error_files(inbox)
    assert len(errors) == 6, sorted(errors)  # bomb, deep, nan, the non-UTF-8 name, the FIFO, the link loop
    left = [p.name for p in inbox.iterdir() if p.name not in ("processing", "done", "failed", "logs", ".latentsync")]
    assert left == [], left
    settled = sorted(sha256_file(p) for folder in ("done", "failed") for p in (inbox / folder).iterdir()
                     if p.is_file() and not p.is_symlink() and not p.name.endswith(".error.json")
                     and not str(p).endswith("pipe.mp4"))
    assert settled == originals, "every dropped file ends once in done/ or failed/, byte-identical"
    second = run_once(inbox, outbox, rules, timeout=60)
    assert second.returncode == 0, second.stderr[-4000:]
    assert len(error_files(inbox)) == 6 and len(outputs(outbox)) == 2, "a restart redoes nothing"


def test_sigterm_is_honoured_while_a_job_hangs_and_the_restart_counts_the_attempt(drop):
    inbox, outbox, rules = drop
    source = make_fake_video(inbox / "hang.mp4")
    digest = sha256_file(source)
    process = subprocess.Popen(watch_command(inbox, outbox, rules, "--stop-grace", "1",
                                             executor="latentsync.testing.fake_pipeline:hanging_fake_pipeline()"),
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        journal_path = inbox / ".latentsync" / "journal.sqlite3"
        wait_until(lambda: journal_path.exists() and [r.state for r in Journal(journal_path).jobs()] == ["running"],
                   timeout=60)
        time.sleep(0.5)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=20)
        stopped_in = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log[-3000:]
    assert stopped_in < 6, f"the first SIGTERM stops the watcher within seconds (took {stopped_in:.1f} s)"
    assert "did not stop within 1 s" in log
    restarted = run_once(inbox, outbox, rules)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "was interrupted during attempt 1" in restarted.stderr
    (row,) = Journal(inbox / ".latentsync" / "journal.sqlite3").jobs()
    assert (row.state, row.attempts) == ("done", 2), "the hung attempt was counted"
    assert outputs(outbox) == ["hang.mp4"] and sha256_file(inbox / "done" / "hang.mp4") == digest


def test_a_second_watcher_with_its_own_state_folder_is_refused(drop, tmp_path):
    inbox, outbox, rules = drop
    first = subprocess.Popen(watch_command(inbox, outbox, rules, "--state", str(tmp_path / "state-a")),
                             env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: (inbox / ".latentsync" / "watch.lock").is_file() and
                   (inbox / ".latentsync" / "watch.lock").read_text().strip() == str(first.pid), timeout=60)
        second = run_once(inbox, tmp_path / "outbox-b", rules, "--state", str(tmp_path / "state-b"), timeout=60)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert second.returncode == 2 and "already watching this INBOX" in second.stderr, second.stderr[-2000:]


def test_unusable_folders_at_start_exit_2_with_a_clear_message(drop):
    inbox, outbox, rules = drop
    outbox.mkdir()
    (outbox / ".staging").write_text("a file where the staging folder should be")
    done = run_once(inbox, outbox, rules, timeout=60)
    assert done.returncode == 2 and "OUTBOX/.staging" in done.stderr and "Traceback" not in done.stderr, done.stderr
    missing = run_once(inbox / "no-such-inbox", outbox, rules, timeout=60)
    assert missing.returncode == 2 and "INBOX is not a folder" in missing.stderr
