"""Fault tests of the drop folder with the fake pipeline: every clip ends in OUTBOX or failed/
exactly once, no output is half-written, the user's input bytes are never modified."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from latentsync.testing.fake_pipeline import FakePipeline, fake_load_ruleset, make_fake_audio, make_fake_video, sha256_file
from latentsync.watch import Journal, Watcher
from watch_helpers import (
    RunningWatcher,
    assert_invariants,
    digests,
    make_config,
    outputs,
    settled,
    wait_until,
    write_rules,
)


def error_of(inbox: Path, stem: str) -> dict:
    return json.loads((inbox / "failed" / f"{stem}.error.json").read_text())


def test_pair_and_own_audio_end_in_outbox_inputs_in_done(drop):
    inbox, outbox, rules = drop
    sources = [make_fake_video(inbox / "talk.mp4"), make_fake_audio(inbox / "talk.wav"),
               make_fake_video(inbox / "solo.mp4", seed=1)]
    originals = digests(*sources)
    summary = Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(),
                      rules_loader=fake_load_ruleset).run(once=True)
    assert (summary.done, summary.failed) == (2, 0)
    assert outputs(outbox) == ["solo.mp4", "talk.mp4"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["solo.mp4", "talk.mp4", "talk.wav"]
    report = json.loads((outbox / "talk.mp4.report.json").read_text())
    assert report["job"]["audio"].endswith("done/talk.wav")
    assert json.loads((outbox / "solo.mp4.report.json").read_text())["job"]["audio"] is None
    assert_invariants(inbox, outbox, originals)


def test_partial_write_of_a_large_file_waits_for_close(drop):
    inbox, outbox, rules = drop
    full = make_fake_video(inbox.parent / "source.mp4", size=8 << 20)
    data = full.read_bytes()
    pipeline = FakePipeline()
    with RunningWatcher(make_config(inbox, outbox, rules), executor=pipeline):
        with open(inbox / "big.mp4", "wb") as handle:
            for start in range(0, len(data), 1 << 20):
                handle.write(data[start:start + (1 << 20)])
                handle.flush()
                time.sleep(0.08)  # longer than pair_wait + settle: only the close may make it ready
                assert pipeline.calls == [], "claimed while still being written"
                assert (inbox / "big.mp4").exists()
        wait_until(settled(inbox, outbox, 1))
    assert outputs(outbox) == ["big.mp4"]
    assert sha256_file(inbox / "done" / "big.mp4") == sha256_file(full)
    assert_invariants(inbox, outbox, digests(full))


def test_partial_write_in_poll_mode_waits_for_stable_size(drop):
    inbox, outbox, rules = drop
    full = make_fake_video(inbox.parent / "source.mp4", size=2 << 20)
    data = full.read_bytes()
    pipeline = FakePipeline()
    with RunningWatcher(make_config(inbox, outbox, rules, poll=0.25), executor=pipeline):
        with open(inbox / "net.mp4", "wb") as handle:
            for start in range(0, len(data), 256 << 10):
                handle.write(data[start:start + (256 << 10)])
                handle.flush()
                time.sleep(0.1)  # shorter than a poll: the size keeps changing between polls
                assert pipeline.calls == []
        wait_until(settled(inbox, outbox, 1))
    assert_invariants(inbox, outbox, digests(full))


def test_file_renamed_in_and_late_companion_audio(drop):
    inbox, outbox, rules = drop
    staging = inbox.parent / "elsewhere"
    staging.mkdir()
    video = make_fake_video(staging / "moved.mp4")
    audio = make_fake_audio(staging / "moved.wav")
    originals = digests(video, audio)
    with RunningWatcher(make_config(inbox, outbox, rules, pair_wait=0.5)):
        os.rename(video, inbox / "moved.mp4")
        time.sleep(0.15)  # the audio arrives after the video, within pair_wait
        os.rename(audio, inbox / "moved.wav")
        wait_until(settled(inbox, outbox, 1))
    report = json.loads((outbox / "moved.mp4.report.json").read_text())
    assert report["job"]["audio"].endswith("done/moved.wav"), "the late audio was paired with its video"
    assert_invariants(inbox, outbox, originals)


def test_garbage_zero_byte_and_unknown_files_fail_with_error_json(drop):
    inbox, outbox, rules = drop
    (inbox / "garbage.mp4").write_bytes(os.urandom(5000))
    (inbox / "empty.mp4").write_bytes(b"")
    (inbox / "notes.txt").write_text("not a clip")
    originals = digests(inbox / "garbage.mp4", inbox / "empty.mp4", inbox / "notes.txt")
    summary = Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(),
                      rules_loader=fake_load_ruleset).run(once=True)
    assert (summary.done, summary.failed) == (0, 3)
    garbage, empty, notes = error_of(inbox, "garbage"), error_of(inbox, "empty"), error_of(inbox, "notes")
    assert garbage["what_failed"] == "running the lip-sync pipeline" and "not a readable mp4" in garbage["why"]
    assert garbage["error"]["type"] == "MediaError" and garbage["error"]["transient"] is False
    assert len(garbage["attempts"]) == 1, "a permanent error is not retried"
    assert "empty (0 bytes)" in empty["why"] and empty["how_to_fix"]
    assert "not a job file" in notes["why"] and ".plan.yaml" in notes["how_to_fix"]
    assert outputs(outbox) == []
    assert_invariants(inbox, outbox, originals)


def test_same_name_dropped_twice_gives_two_outputs(drop):
    inbox, outbox, rules = drop
    first_source = make_fake_video(inbox.parent / "one.mp4", seed=1)
    second_source = make_fake_video(inbox.parent / "two.mp4", seed=2)
    with RunningWatcher(make_config(inbox, outbox, rules)):
        (inbox.parent / "one_copy.mp4").write_bytes(first_source.read_bytes())
        os.rename(inbox.parent / "one_copy.mp4", inbox / "clip.mp4")
        wait_until(settled(inbox, outbox, 1))
        (inbox.parent / "two_copy.mp4").write_bytes(second_source.read_bytes())
        os.rename(inbox.parent / "two_copy.mp4", inbox / "clip.mp4")
        wait_until(settled(inbox, outbox, 2))
    assert outputs(outbox) == ["clip-2.mp4", "clip.mp4"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["clip-2.mp4", "clip.mp4"]
    assert sha256_file(inbox / "done" / "clip.mp4") == sha256_file(first_source)
    assert sha256_file(inbox / "done" / "clip-2.mp4") == sha256_file(second_source)
    assert_invariants(inbox, outbox, digests(first_source, second_source))


def test_hard_linked_drop_is_rejected(drop):
    inbox, outbox, rules = drop
    source = make_fake_video(inbox.parent / "elsewhere.mp4")
    os.link(source, inbox / "linked.mp4")
    Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(), rules_loader=fake_load_ruleset).run(once=True)
    assert "hard link" in error_of(inbox, "linked")["why"]
    assert sha256_file(source) == sha256_file(inbox / "failed" / "linked.mp4")


def test_invalid_rules_edit_mid_run_keeps_last_good_then_fixed(drop):
    inbox, outbox, rules = drop
    pipeline = FakePipeline()
    with RunningWatcher(make_config(inbox, outbox, rules), executor=pipeline) as running:
        make_fake_video(inbox / "first.mp4", seed=1)
        wait_until(settled(inbox, outbox, 1))
        # An editor saves by writing a temp file and renaming it over the original.
        (rules / ".base.yaml.swp").write_text("schema_version: [broken\n")
        os.rename(rules / ".base.yaml.swp", rules / "base.yaml")
        wait_until(lambda: running.watcher.rules.rejected >= 1)
        make_fake_video(inbox / "second.mp4", seed=2)
        wait_until(settled(inbox, outbox, 2))
        write_rules(rules / "tmp", "v2")
        os.rename(rules / "tmp" / "base.yaml", rules / "base.yaml")
        os.rmdir(rules / "tmp")
        wait_until(lambda: running.watcher.rules.version == "v2")
        make_fake_video(inbox / "third.mp4", seed=3)
        wait_until(settled(inbox, outbox, 3))
        assert running.watcher.rules.reloads == 1
    versions = {name: json.loads((outbox / f"{name}.mp4.report.json").read_text())["rules_version"]
                for name in ("first", "second", "third")}
    assert versions == {"first": "v1", "second": "v1", "third": "v2"}
    hashes = {json.loads((outbox / f"{n}.mp4.report.json").read_text())["rules_hash"] for n in ("first", "third")}
    assert len(hashes) == 2
    log = (inbox / "logs" / "watch.log").read_text()
    assert "rules edit" in log and "rejected" in log and "invalid YAML" in log


def test_transient_failure_is_retried_then_succeeds_or_gives_up(drop):
    inbox, outbox, rules = drop
    make_fake_video(inbox / "flaky.mp4", seed=1)
    make_fake_video(inbox / "doomed.mp4", seed=2)
    originals = digests(inbox / "flaky.mp4", inbox / "doomed.mp4")
    pipeline = FakePipeline(transient_failures={"flaky": 1, "doomed": 99})
    summary = Watcher(make_config(inbox, outbox, rules, retries=2), executor=pipeline,
                      rules_loader=fake_load_ruleset).run(once=True)
    assert (summary.done, summary.failed, summary.retried) == (1, 1, 3)
    assert pipeline.calls.count("flaky.mp4") == 2 and pipeline.calls.count("doomed.mp4") == 3
    doomed = error_of(inbox, "doomed")
    assert doomed["error"]["transient"] is True and len(doomed["attempts"]) == 3
    assert "simulated transient failure" in doomed["why"]
    assert_invariants(inbox, outbox, originals)


def test_fifty_clips_dropped_at_once(drop):
    inbox, outbox, rules = drop
    batch = inbox.parent / "batch"
    batch.mkdir()
    sources = []
    for index in range(50):
        sources.append(make_fake_video(batch / f"clip{index:02d}.mp4", seed=index))
        if index % 2 == 0:
            sources.append(make_fake_audio(batch / f"clip{index:02d}.wav", seed=index))
    originals = digests(*sources)
    pipeline = FakePipeline()
    with RunningWatcher(make_config(inbox, outbox, rules), executor=pipeline):
        for source in sources:
            os.rename(source, inbox / source.name)
        wait_until(settled(inbox, outbox, 50), timeout=30)
        time.sleep(0.2)  # nothing more may happen
    runs = [event for event in Journal(inbox / ".latentsync" / "journal.sqlite3").events() if event[1] == "running"]
    assert len(outputs(outbox)) == 50
    assert len(runs) == 50 and sorted(pipeline.calls) == sorted(f"clip{i:02d}.mp4" for i in range(50))
    for index in range(0, 50, 2):
        report = json.loads((outbox / f"clip{index:02d}.mp4.report.json").read_text())
        assert report["job"]["audio"].endswith(f"clip{index:02d}.wav")
    assert_invariants(inbox, outbox, originals)


def test_plan_job_with_overrides_and_output_name(drop):
    inbox, outbox, rules = drop
    make_fake_video(inbox / "raw.mp4")
    make_fake_audio(inbox / "dub_fr.wav")
    (inbox / "french.plan.yaml").write_text(
        "video: raw.mp4\naudio: dub_fr.wav\noutput: raw_fr.mp4\ngoal: preview\noverrides:\n  steps: 8\n")
    originals = digests(inbox / "raw.mp4", inbox / "dub_fr.wav", inbox / "french.plan.yaml")
    seen = []

    def executor(spec, **kwargs):
        seen.append(spec)
        return FakePipeline()(spec, **kwargs)

    summary = Watcher(make_config(inbox, outbox, rules, weights="random"), executor=executor,
                      rules_loader=fake_load_ruleset).run(once=True)
    assert (summary.done, summary.failed) == (1, 0)
    (spec,) = seen
    assert spec.overrides == {"steps": 8} and spec.goal == "preview" and spec.weights == "random"
    assert Path(spec.audio).name == "dub_fr.wav"
    assert outputs(outbox) == ["raw_fr.mp4"]
    assert_invariants(inbox, outbox, originals)


@pytest.mark.parametrize("plan_text, expected", [
    ("video: /etc/hostname.mp4\noutput: o.mp4\n", "absolute path"),
    ("video: ../secret.mp4\noutput: o.mp4\n", "'..'"),
    ("video: link.mp4\noutput: o.mp4\n", "symbolic link leading outside INBOX"),
    ("video: ok.mp4\noutput: ../../escape.mp4\n", "'output' leaves OUTBOX"),
])
def test_dropped_plan_cannot_reach_outside(drop, plan_text, expected):
    inbox, outbox, rules = drop
    secret = inbox.parent / "secret.mp4"
    make_fake_video(secret)
    os.symlink(secret, inbox / "link.mp4")
    make_fake_video(inbox / "ok.mp4")
    (inbox / "evil.plan.yaml").write_text(plan_text)
    pipeline = FakePipeline()
    Watcher(make_config(inbox, outbox, rules), executor=pipeline, rules_loader=fake_load_ruleset).run(once=True)
    error = error_of(inbox, "evil")
    assert expected in error["why"] and error["how_to_fix"]
    assert "secret.mp4" not in pipeline.calls
    assert not (inbox.parent / "escape.mp4").exists()
    assert secret.is_file() and (inbox / "failed" / "evil.plan.yaml").is_file()


def test_crash_while_moving_outputs_is_completed_on_restart(drop, monkeypatch):
    inbox, outbox, rules = drop
    make_fake_video(inbox / "clip.mp4")
    make_fake_audio(inbox / "clip.wav")
    originals = digests(inbox / "clip.mp4", inbox / "clip.wav")
    from latentsync.watch import watcher as watcher_module

    real_apply = watcher_module._apply_moves

    def crash_after_first_move(moves):
        real_apply(moves[:1])
        raise KeyboardInterrupt("simulated crash mid-move")

    monkeypatch.setattr(watcher_module, "_apply_moves", crash_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(), rules_loader=fake_load_ruleset).run(once=True)
    monkeypatch.setattr(watcher_module, "_apply_moves", real_apply)
    pipeline = FakePipeline()
    summary = Watcher(make_config(inbox, outbox, rules), executor=pipeline, rules_loader=fake_load_ruleset).run(once=True)
    assert pipeline.calls == [], "a finished job is completed, not run again"
    assert summary.done == 1 and outputs(outbox) == ["clip.mp4"]
    assert_invariants(inbox, outbox, originals)


def test_lost_journal_hands_processing_files_back(drop):
    inbox, outbox, rules = drop
    orphan = inbox / "processing" / "000007-old"
    orphan.mkdir(parents=True)
    make_fake_video(orphan / "old.mp4")
    originals = digests(orphan / "old.mp4")
    summary = Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(),
                      rules_loader=fake_load_ruleset).run(once=True)
    assert summary.done == 1 and outputs(outbox) == ["old.mp4"]
    assert_invariants(inbox, outbox, originals)


def test_second_watcher_on_same_inbox_is_refused(drop):
    inbox, outbox, rules = drop
    from latentsync.watch import WatchFolderBusy

    with RunningWatcher(make_config(inbox, outbox, rules)):
        with pytest.raises(WatchFolderBusy, match="already watching"):
            Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(),
                    rules_loader=fake_load_ruleset).run(once=True)


def test_outbox_inside_inbox_working_folder_is_refused(drop):
    inbox, _outbox, rules = drop
    from latentsync.errors import InvalidInputError

    for bad in (inbox, inbox / "done"):
        with pytest.raises(InvalidInputError, match="OUTBOX must not be"):
            Watcher(make_config(inbox, bad, rules), executor=FakePipeline(), rules_loader=fake_load_ruleset).run(once=True)


def test_invalid_rules_at_start_are_fatal(drop):
    inbox, outbox, rules = drop
    (rules / "base.yaml").write_text("version: no schema\n")
    from latentsync.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="schema_version"):
        Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(), rules_loader=fake_load_ruleset).run(once=True)


def test_rules_changed_during_a_job_apply_from_the_next_job(drop):
    inbox, outbox, rules = drop
    pipeline = FakePipeline(chunks=5, chunk_seconds=0.08)
    with RunningWatcher(make_config(inbox, outbox, rules), executor=pipeline) as running:
        make_fake_video(inbox / "during.mp4", seed=1)
        wait_until(lambda: pipeline.calls == ["during.mp4"])
        write_rules(rules, "v2")  # saved while the job runs
        wait_until(settled(inbox, outbox, 1))
        wait_until(lambda: running.watcher.rules.version == "v2")
        make_fake_video(inbox / "after.mp4", seed=2)
        wait_until(settled(inbox, outbox, 2))
    version = {n: json.loads((outbox / f"{n}.mp4.report.json").read_text())["rules_version"] for n in ("during", "after")}
    assert version == {"during": "v1", "after": "v2"}


def test_engine_rejection_of_a_dropped_plan_names_the_users_file(drop, monkeypatch):
    inbox, outbox, rules = drop
    from latentsync import engine
    from latentsync.errors import InvalidInputError

    def strict_loader(path):
        raise InvalidInputError(f"invalid plan: 1 problem\n  {path}:3: overrides.steps: 500 is greater than 100",
                                path=str(path), hint="steps is 1..100")

    monkeypatch.setattr(engine, "load_plan_file", strict_loader, raising=False)
    make_fake_video(inbox / "clip.mp4")
    (inbox / "greedy.plan.yaml").write_text("video: clip.mp4\noutput: clip_synced.mp4\noverrides:\n  steps: 500\n")
    originals = digests(inbox / "clip.mp4", inbox / "greedy.plan.yaml")
    pipeline = FakePipeline()
    Watcher(make_config(inbox, outbox, rules), executor=pipeline, rules_loader=fake_load_ruleset).run(once=True)
    error = error_of(inbox, "greedy")
    assert "greedy.plan.yaml:3: overrides.steps: 500 is greater than 100" in error["why"]
    assert "processing" not in error["why"] and error["how_to_fix"] == "steps is 1..100"
    assert error["error"]["transient"] is False and pipeline.calls == []
    assert_invariants(inbox, outbox, originals)


def test_sigterm_during_a_job_requeues_it_and_restores_the_handlers(drop):
    import signal

    inbox, outbox, rules = drop
    make_fake_video(inbox / "clip.mp4")
    originals = digests(inbox / "clip.mp4")
    pipeline = FakePipeline()

    def terminated_mid_job(spec, **kwargs):
        # As `kill PID` would, while the job runs (the pipeline's worker thread; the main thread
        # takes the signal and asks the job to stop at its next chunk).
        signal.raise_signal(signal.SIGTERM)
        wait_until(kwargs["cancel"], timeout=5)
        return pipeline(spec, **kwargs)

    def unhandled(_signum, _frame):
        raise AssertionError("the watcher did not take SIGTERM")

    saved = signal.signal(signal.SIGTERM, unhandled)  # instead of the default: killing pytest
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        summary = Watcher(make_config(inbox, outbox, rules), executor=terminated_mid_job,
                          rules_loader=fake_load_ruleset).run(once=True)
        assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert (summary.done, summary.failed, summary.requeued) == (0, 0, 1)  # stopped at a chunk, not failed
    [row] = Journal(inbox / ".latentsync" / "journal.sqlite3").jobs()
    assert row.state == "queued" and row.attempts == 0
    summary = Watcher(make_config(inbox, outbox, rules), executor=FakePipeline(),
                      rules_loader=fake_load_ruleset).run(once=True)
    assert summary.done == 1 and outputs(outbox) == ["clip.mp4"]
    assert_invariants(inbox, outbox, originals)
