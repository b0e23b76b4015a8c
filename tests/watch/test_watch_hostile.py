"""Hostile input against the drop folder (fake pipeline, real file system, real journal): no single
dropped item can crash, hang or fool the watcher, and every item ends exactly once in OUTBOX or
failed/ with its bytes intact."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from latentsync.errors import InvalidInputError
from latentsync.failures import PERMANENT, classify_error
from latentsync.testing.fake_pipeline import (
    FakePipeline,
    HangingPipeline,
    fake_load_ruleset,
    make_fake_audio,
    make_fake_video,
    sha256_file,
)
from latentsync.watch import Journal, Watcher, WatchFolderBusy
from latentsync.watch import watcher as watcher_module
from watch_helpers import (
    ALIAS_BOMB,
    RunningWatcher,
    assert_invariants,
    digests,
    error_files,
    make_config,
    outputs,
    settled,
    wait_until,
)

def journal_of(inbox: Path) -> Journal:
    return Journal(inbox / ".latentsync" / "journal.sqlite3")


def once(inbox, outbox, rules, executor=None, **overrides):
    return Watcher(make_config(inbox, outbox, rules, **overrides), executor=executor or FakePipeline(),
                   rules_loader=fake_load_ruleset).run(once=True)


@contextlib.contextmanager
def unwritable(folder: Path):
    """Make `folder` refuse new entries for real: chmod for a normal user, the immutable flag for root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = lambda: folder.chmod(0o755)  # noqa: E731
    else:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder unwritable as root here: {done.stderr.decode().strip()}")
        undo = lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)  # noqa: E731
    try:
        try:
            (folder / ".probe").touch()
        except OSError:
            pass
        else:
            (folder / ".probe").unlink()
            undo()
            pytest.skip("this file system lets the folder be written anyway")
        yield undo
    finally:
        undo()


# ------------------------------------------------------------------------------------------- names

def test_names_near_the_file_system_limit_are_processed_and_reported(drop):
    inbox, outbox, rules = drop
    stem = "v" * 246  # 250-byte names: every derived name must be shortened to fit
    sources = [make_fake_video(inbox / f"{stem}.mp4"), make_fake_audio(inbox / f"{stem}.wav"),
               make_fake_video(inbox / ("w" * 240 + ".mp4"), seed=2)]
    (inbox / ("n" * 246 + ".txt")).write_text("not a job")
    sources.append(inbox / ("n" * 246 + ".txt"))
    originals = digests(*sources)
    summary = once(inbox, outbox, rules)
    assert (summary.done, summary.failed) == (2, 1)
    for name in outputs(outbox):
        assert len(name.encode()) + len(".report.json") <= 255
        assert (outbox / (name + ".report.json")).is_file()
    (error,) = error_files(inbox).values()
    assert "is not a job file" in error["why"]
    assert_invariants(inbox, outbox, originals)
    assert once(inbox, outbox, rules).failed == 0, "a restart finds nothing left to do"


def test_a_name_that_is_not_utf8_is_moved_aside_sanitized_and_kept_byte_exact(drop):
    inbox, outbox, rules = drop
    raw_video, raw_audio = b"caf\xe9.mp4", b"caf\xe9.wav"
    make_fake_video(Path(os.fsdecode(os.path.join(os.fsencode(inbox), raw_video))))
    make_fake_audio(Path(os.fsdecode(os.path.join(os.fsencode(inbox), raw_audio))))
    make_fake_video(inbox / "line\nbreak.mp4", seed=3)
    make_fake_video(inbox / "fine.mp4", seed=4)
    originals = digests(*[Path(os.fsdecode(os.path.join(os.fsencode(inbox), n))) for n in (raw_video, raw_audio)],
                        inbox / "line\nbreak.mp4", inbox / "fine.mp4")
    summary = once(inbox, outbox, rules)
    assert (summary.done, summary.failed) == (1, 2)
    assert outputs(outbox) == ["fine.mp4"]
    failed_names = sorted(os.listdir(os.fsencode(inbox / "failed")))
    assert all(name.decode("utf-8") and b"\n" not in name for name in failed_names), failed_names
    errors = error_files(inbox)
    cafe = next(e for e in errors.values() if "caf" in e["job"])
    assert "not valid UTF-8" in cafe["why"] and sorted(cafe["original_names_hex"].values()) == \
        sorted(n.hex() for n in (raw_video, raw_audio))
    assert len(cafe["files"]) == 2, "the pair goes to failed/ together"
    rows = [r for r in journal_of(inbox).jobs() if r.kind == "reject"]
    stored = sorted(os.fsencode(f) for r in rows for f in r.files)
    assert stored == sorted([raw_video, raw_audio, b"line\nbreak.mp4"]), "the journal keeps the exact bytes"
    log = (inbox / "logs" / "watch.log").read_bytes()
    assert b"caf\\xe9" in log and b"line\\nbreak" in log, "names are logged escaped, one line each"
    assert_invariants(inbox, outbox, originals)
    assert once(inbox, outbox, rules).failed == 0


# ------------------------------------------------------------------------------------------- plans

def test_hostile_plans_fail_fast_and_take_their_media_with_them(drop):
    inbox, outbox, rules = drop
    (inbox / "bomb.plan.yaml").write_text(ALIAS_BOMB)
    (inbox / "deep.plan.yaml").write_text("video: " + "[" * 50_000 + "]" * 50_000 + "\noutput: o.mp4\n")
    (inbox / "nan.plan.yaml").write_text("video: nanclip.mp4\noutput: nan_out.mp4\noverrides:\n  guidance_scale: .nan\n")
    (inbox / "recursive.plan.yaml").write_text("video: &x [a, *x]\noutput: o.mp4\n")
    sources = [make_fake_video(inbox / "bomb.mp4"), make_fake_audio(inbox / "bomb_fr.wav"),
               make_fake_video(inbox / "deep.mp4", seed=1), make_fake_video(inbox / "nanclip.mp4", seed=2),
               make_fake_video(inbox / "plain.mp4", seed=3)]
    sources += [inbox / f"{n}.plan.yaml" for n in ("bomb", "deep", "nan", "recursive")]
    originals = digests(*sources)
    pipeline = FakePipeline()
    started = time.monotonic()
    summary = once(inbox, outbox, rules, executor=pipeline)
    assert time.monotonic() - started < 20
    assert (summary.done, summary.failed) == (1, 4) and pipeline.calls == ["plain.mp4"]
    errors = error_files(inbox)
    assert "YAML nodes" in errors["bomb.error.json"]["why"]
    assert set(errors["bomb.error.json"]["files"]) == {"bomb.plan.yaml", "bomb.mp4", "bomb_fr.wav"}
    assert set(errors["deep.error.json"]["files"]) == {"deep.plan.yaml", "deep.mp4"}
    assert "not a finite number" in errors["nan.error.json"]["why"]
    assert set(errors["nan.error.json"]["files"]) == {"nan.plan.yaml", "nanclip.mp4"}
    assert "recursive" in errors["recursive.error.json"]["why"]
    assert_invariants(inbox, outbox, originals)


def test_media_of_a_rejected_plan_arriving_later_follow_it_into_failed(drop):
    inbox, outbox, rules = drop
    pipeline = FakePipeline()
    with RunningWatcher(make_config(inbox, outbox, rules), executor=pipeline):
        (inbox / "late.plan.yaml").write_text("video: late.mp4\naudio: late_fr.wav\noutput: ../escape.mp4\n")
        wait_until(lambda: "late.error.json" in error_files(inbox))
        staged = [make_fake_video(inbox.parent / "late.mp4"), make_fake_audio(inbox.parent / "late_fr.wav")]
        originals = {p.name: sha256_file(p) for p in staged}
        for path in staged:
            shutil.copy(path, inbox / path.name)
        wait_until(lambda: len(error_files(inbox)) == 3)
    assert pipeline.calls == [], "never lip-synced to its own audio as if no plan existed"
    followers = [e for name, e in error_files(inbox).items() if name != "late.error.json"]
    assert len(followers) == 2 and all("late.plan.yaml, which was rejected" in e["why"] for e in followers)
    assert not (inbox / "late.mp4").exists() and not (inbox / "late_fr.wav").exists()
    moved = sorted(sha256_file(p) for p in (inbox / "failed").iterdir() if p.suffix in (".mp4", ".wav"))
    assert moved == sorted(originals.values()), "byte-identical, in failed/"


def test_a_plan_naming_a_link_fails_with_the_link(drop):
    inbox, outbox, rules = drop
    outside = make_fake_video(inbox.parent / "outside.mp4")
    os.symlink(outside, inbox / "linked.mp4")
    (inbox / "linked.plan.yaml").write_text("video: linked.mp4\noutput: linked_out.mp4\n")
    once(inbox, outbox, rules)
    error = error_files(inbox)["linked.error.json"]
    assert "symbolic link" in error["why"] and set(error["files"]) == {"linked.plan.yaml", "linked.mp4"}
    assert outside.is_file() and outputs(outbox) == []


# ------------------------------------------------------------------------------------------- files appearing later

def test_links_pipes_sockets_and_folders_that_appear_later_go_to_failed(drop, tmp_path):
    inbox, outbox, rules = drop
    outside = make_fake_video(tmp_path / "outside.mp4")
    with RunningWatcher(make_config(inbox, outbox, rules, rescan_interval=0.2)):
        os.symlink(outside, inbox / "soft.mp4")
        os.symlink(inbox / "loop.mp4", inbox / "loop.mp4")
        os.link(outside, inbox / "hard.mp4")
        os.mkfifo(inbox / "pipe.mp4")
        (inbox / "folder.mp4").mkdir()
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(inbox / "sock.wav"))
        try:
            wait_until(lambda: len(error_files(inbox)) == 6, timeout=15)
        finally:
            server.close()
    reasons = {name: error["why"] for name, error in error_files(inbox).items()}
    assert "symbolic link leading outside INBOX" in reasons["soft.error.json"]
    assert "symbolic link" in reasons["loop.error.json"]
    assert "hard link" in reasons["hard.error.json"]
    assert "named pipe" in reasons["pipe.error.json"]
    assert "is a folder" in reasons["folder.error.json"]
    assert "socket" in reasons["sock.error.json"]
    assert sorted(p.name for p in inbox.iterdir() if p.name not in ("processing", "done", "failed", "logs",
                                                                      ".latentsync")) == []
    assert outside.is_file() and outputs(outbox) == []


# ------------------------------------------------------------------------------------------- folders

def test_outbox_unwritable_mid_job_is_retried_and_the_clip_delivered(drop):
    inbox, outbox, rules = drop
    pipeline = FakePipeline(chunks=6, chunk_seconds=0.1)
    source = make_fake_video(inbox / "clip.mp4")
    originals = digests(source)
    with RunningWatcher(make_config(inbox, outbox, rules, io_retry_max=0.5)) as running:
        running.watcher.executor = pipeline
        wait_until(lambda: pipeline.calls == ["clip.mp4"])
        with unwritable(outbox):
            wait_until(lambda: [r.state for r in journal_of(inbox).jobs()] == ["finishing"], timeout=10)
            time.sleep(1.0)  # several tries fail meanwhile
            assert outputs(outbox) == [] and error_files(inbox) == {}
        wait_until(settled(inbox, outbox, 1), timeout=10)
    assert outputs(outbox) == ["clip.mp4"] and error_files(inbox) == {}
    (row,) = journal_of(inbox).jobs()
    assert (row.state, row.attempts) == ("done", 1)
    assert_invariants(inbox, outbox, originals)


def test_staging_unwritable_while_running_waits_without_counting_attempts(drop):
    inbox, outbox, rules = drop
    with RunningWatcher(make_config(inbox, outbox, rules, io_retry_max=0.5)):
        with unwritable(outbox / ".staging"):
            source = make_fake_video(inbox / "clip.mp4")
            wait_until(lambda: any(r.state == "queued" and "cannot" in (e[2] or "")
                                   for r in journal_of(inbox).jobs() for e in journal_of(inbox).events(r.id)))
            time.sleep(1.0)
        wait_until(settled(inbox, outbox, 1), timeout=10)
    (row,) = journal_of(inbox).jobs()
    assert (row.state, row.attempts) == ("done", 1), "waiting for a folder is not an attempt"
    assert_invariants(inbox, outbox, digests(inbox / "done" / source.name))


def test_unusable_folders_at_start_are_a_clear_configuration_error(drop):
    inbox, outbox, rules = drop
    (outbox / ".staging").mkdir(parents=True)
    with unwritable(outbox / ".staging"):
        with pytest.raises(InvalidInputError, match="OUTBOX/.staging cannot be written") as caught:
            once(inbox, outbox, rules)
    assert caught.value.exit_code == 2
    shutil.rmtree(outbox)
    outbox.write_text("a file, not a folder")
    with pytest.raises(InvalidInputError, match="OUTBOX"):
        once(inbox, outbox, rules)


# ------------------------------------------------------------------------------------------- ownership

def test_one_owner_per_inbox_whatever_state_says(drop, tmp_path):
    inbox, outbox, rules = drop
    with RunningWatcher(make_config(inbox, outbox, rules, state_dir=tmp_path / "state-a")):
        with pytest.raises(WatchFolderBusy, match="already watching"):
            Watcher(make_config(inbox, tmp_path / "outbox-b", rules, state_dir=tmp_path / "state-b"),
                    executor=FakePipeline(), rules_loader=fake_load_ruleset).run(once=True)


def test_a_file_taken_during_the_claim_abandons_it_and_nothing_is_failed(drop, monkeypatch, tmp_path):
    inbox, outbox, rules = drop
    make_fake_video(inbox / "race.mp4")
    make_fake_audio(inbox / "race.wav")
    elsewhere = tmp_path / "other-watcher"
    elsewhere.mkdir()
    real_rename = os.rename

    def racing_rename(source, target):
        if str(source).endswith("race.wav") and "processing" in str(target):
            real_rename(source, elsewhere / "race.wav")  # another process claimed it first
        return real_rename(source, target)

    monkeypatch.setattr(watcher_module.os, "rename", racing_rename)
    summary = once(inbox, outbox, rules)
    monkeypatch.setattr(watcher_module.os, "rename", real_rename)
    rows = journal_of(inbox).jobs()
    assert rows[0].state == "abandoned" and summary.failed == 0 and error_files(inbox) == {}
    assert (elsewhere / "race.wav").is_file()
    assert (inbox / "race.mp4").is_file() or (inbox / "done" / "race.mp4").is_file(), "the video went back"


# ------------------------------------------------------------------------------------------- bounded in time

def test_a_job_past_its_timeout_is_an_attempt_and_the_queue_moves_on(drop):
    inbox, outbox, rules = drop
    make_fake_video(inbox / "hang.mp4")
    make_fake_video(inbox / "ok.mp4", seed=1)
    pipeline = HangingPipeline(ignore_cancel=True)  # ignores even the cancel request
    started = time.monotonic()
    summary = once(inbox, outbox, rules, executor=pipeline, job_timeout=0.3, stop_grace=0.3, retries=1)
    assert time.monotonic() - started < 15
    assert (summary.done, summary.failed) == (1, 1) and pipeline.calls.count("hang.mp4") == 2
    error = error_files(inbox)["hang.error.json"]
    assert error["error"]["type"] == "JobTimeout" and len(error["attempts"]) == 2
    assert outputs(outbox) == ["ok.mp4"]


def test_stop_is_honoured_while_a_job_ignores_it_and_the_restart_counts_the_attempt(drop):
    inbox, outbox, rules = drop
    source = make_fake_video(inbox / "hang.mp4")
    originals = digests(source)
    pipeline = HangingPipeline(ignore_cancel=True)
    running = RunningWatcher(make_config(inbox, outbox, rules, stop_grace=0.5), executor=pipeline)
    with running:
        wait_until(lambda: pipeline.calls == ["hang.mp4"])
        asked = time.monotonic()
        running.watcher.request_stop("test")
        running.thread.join(timeout=10)
        assert not running.thread.is_alive() and time.monotonic() - asked < 3
    (row,) = journal_of(inbox).jobs()
    assert (row.state, row.attempts) == ("running", 1)
    summary = once(inbox, outbox, rules)
    (row,) = journal_of(inbox).jobs()
    assert summary.done == 1 and row.attempts == 2, "the interrupted attempt counts"
    assert_invariants(inbox, outbox, originals)


def test_a_plan_that_killed_the_reader_is_refused_after_the_attempts(drop, monkeypatch):
    inbox, outbox, rules = drop
    (inbox / "killer.plan.yaml").write_text("video: killer.mp4\noutput: k.mp4\n")
    make_fake_video(inbox / "killer.mp4")

    def killed(path):
        raise KeyboardInterrupt("simulated: the process died while reading this plan")

    real_parse = watcher_module.parse_drop_plan
    monkeypatch.setattr(watcher_module, "parse_drop_plan", killed)
    for _ in range(3):  # retries=2: three attempts
        with pytest.raises(KeyboardInterrupt):
            once(inbox, outbox, rules)

    def never(path):
        raise AssertionError("a plan that killed the reader three times is not read again")

    monkeypatch.setattr(watcher_module, "parse_drop_plan", never)
    summary = once(inbox, outbox, rules)
    error = error_files(inbox)["killer.error.json"]
    assert summary.failed == 1 and "stopped 3 time(s) while reading this plan" in error["why"]
    assert set(error["files"]) == {"killer.plan.yaml", "killer.mp4"}
    monkeypatch.setattr(watcher_module, "parse_drop_plan", real_parse)
    (inbox / "killer.plan.yaml").write_text("video: killer2.mp4\noutput: k.mp4\n")  # a new plan, same name
    make_fake_video(inbox / "killer2.mp4", seed=2)
    assert once(inbox, outbox, rules).done == 1, "the next plan of that name is read normally"


def test_an_unexpected_fault_in_the_loop_is_contained(drop, monkeypatch):
    inbox, outbox, rules = drop
    calls = {"n": 0}
    real = Watcher._update_stability

    def flaky(self, now):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated fault outside any item")
        return real(self, now)

    monkeypatch.setattr(Watcher, "_update_stability", flaky)
    with RunningWatcher(make_config(inbox, outbox, rules)):
        make_fake_video(inbox / "after.mp4")
        wait_until(settled(inbox, outbox, 1), timeout=10)
    assert outputs(outbox) == ["after.mp4"] and calls["n"] > 2


# ------------------------------------------------------------------------------------------- honest errors

def test_errors_are_classified_honestly(drop):
    inbox, outbox, rules = drop
    for code in (errno.ENAMETOOLONG, errno.ELOOP):
        assert classify_error(OSError(code, os.strerror(code), "x")) == PERMANENT
    make_fake_video(inbox / "loop.mp4")

    def link_loop(spec, **kwargs):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(spec.video))

    summary = once(inbox, outbox, rules, executor=link_loop)
    error = error_files(inbox)["loop.error.json"]
    assert summary.failed == 1 and error["error"]["transient"] is False and len(error["attempts"]) == 1
    assert "link loop" in error["how_to_fix"] and "may pass" not in error["how_to_fix"]


def test_a_rules_failure_is_not_blamed_on_the_clip(drop):
    inbox, outbox, rules = drop
    from latentsync.engine import Problem, RulesError

    make_fake_video(inbox / "innocent.mp4")

    def broken_rules(spec, **kwargs):
        raise RulesError([Problem("v1/10_classify.yaml", "derive rules do not settle on one value")])

    once(inbox, outbox, rules, executor=broken_rules)
    error = error_files(inbox)["innocent.error.json"]
    assert error["what_failed"] == "resolving the settings from the drop folder's rules"
    assert "not the clip's fault" in error["how_to_fix"]


def test_working_folders_replaced_by_links_are_not_followed(drop, tmp_path):
    inbox, outbox, rules = drop
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with RunningWatcher(make_config(inbox, outbox, rules)):
        shutil.rmtree(inbox / "failed")
        os.symlink(elsewhere, inbox / "failed")  # someone who can write to INBOX points failed/ elsewhere
        (inbox / "notes.txt").write_text("not a job")
        wait_until(lambda: (inbox / "failed").is_dir() and not (inbox / "failed").is_symlink()
                   and "notes.error.json" in error_files(inbox))
    assert list(elsewhere.iterdir()) == [], "nothing was written or moved through the link"
    assert (inbox / "failed" / "notes.txt").read_text() == "not a job"
    inbox_link = inbox / "done"
    shutil.rmtree(inbox_link)
    os.symlink(elsewhere, inbox_link)
    with pytest.raises(InvalidInputError, match="symbolic link"):
        once(inbox, outbox, rules)


def test_two_plans_naming_one_clip_do_not_both_claim_it(drop):
    inbox, outbox, rules = drop
    make_fake_video(inbox / "shared.mp4")
    (inbox / "a.plan.yaml").write_text("video: shared.mp4\noutput: a_out.mp4\n")
    (inbox / "b.plan.yaml").write_text("video: shared.mp4\noutput: b_out.mp4\n")
    summary = once(inbox, outbox, rules)
    assert (summary.done, summary.failed) == (1, 1) and outputs(outbox) == ["a_out.mp4"]
    assert "another plan dropped before it already names" in error_files(inbox)["b.error.json"]["why"]
