"""Drop-folder rules for names, dropped plans and claimed files (security included)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentsync.watch.discovery import DropFolderError, check_claimed_file, classify, parse_drop_plan, stem_of


@pytest.mark.parametrize("name, kind", [
    ("clip.mp4", "video"), ("Clip.MOV", "video"), ("clip.wav", "audio"), ("clip.m4a", "audio"),
    ("clip.mp3", "audio"), ("clip.plan.yaml", "plan"), ("clip.plan.yml", "plan"), ("notes.txt", "unknown"),
    (".clip.mp4.x1y2", "ignore"), ("clip.mp4.part", "ignore"), ("clip.mp4.crdownload", "ignore"),
    ("~$clip.mp4", "ignore"), ("clip.mp4.partial.123", "ignore"), ("clip.yaml", "unknown"),
])
def test_classify(name, kind):
    assert classify(name) == kind


def test_stem_of_plan_and_media():
    assert stem_of("clip.plan.yaml") == "clip"
    assert stem_of("clip.v2.mp4") == "clip.v2"


def _plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.plan.yaml"
    path.write_text(text)
    return path


def test_valid_plan_names_inputs_and_output(tmp_path):
    plan = parse_drop_plan(_plan(tmp_path, "video: clip.mp4\naudio: voice.wav\noutput: synced.mp4\noverrides: {steps: 10}\n"))
    assert plan.inputs == ["clip.mp4", "voice.wav"]
    assert plan.output == "synced.mp4"
    assert plan.job["overrides"] == {"steps": 10}


def test_plan_in_jobs_list_form(tmp_path):
    plan = parse_drop_plan(_plan(tmp_path, "defaults:\n  output: out.mp4\njobs:\n  - video: clip.mp4\n"))
    assert plan.inputs == ["clip.mp4"] and plan.output == "out.mp4"


@pytest.mark.parametrize("text, words", [
    ("video: /etc/passwd.mp4\n", ["'video'", "absolute path"]),
    ("video: clip.mp4\n", ["'output' is missing"]),
    ("defaults:\n  audio: ../secret.wav\njobs:\n  - video: clip.mp4\n    output: o.mp4\n", ["'audio'", "'..'"]),
    ("defaults:\n  weights: /etc\njobs:\n  - video: clip.mp4\n    output: o.mp4\n", ["'weights'"]),
    ("video: ../outside.mp4\noutput: o.mp4\n", ["'video'", "'..'"]),
    ("video: clip.mp4\naudio: ../../secret.wav\n", ["'audio'", "'..'"]),
    ("video: sub/clip.mp4\noutput: o.mp4\n", ["'video'", "sub-folder"]),
    ("video: clip.mp4\noutput: /tmp/evil.mp4\n", ["'output'", "absolute path"]),
    ("video: clip.mp4\noutput: ../evil.mp4\n", ["'output'", "'..'"]),
    ("video: clip.mp4\noutput: sub/evil.mp4\n", ["'output'", "plain file name"]),
    ("video: clip.mp4\nreport: /tmp/r.json\n", ["'report'"]),
    ("video: clip.mp4\nweights: /models/latentsync\n", ["'weights'", "--weights"]),
    ("video: .hidden.mp4\n", ["hidden"]),
    ("audio: voice.wav\n", ["'video' is missing"]),
    ("video: notes.txt\n", ["'video' must name a video"]),
    ("jobs:\n  - video: a.mp4\n  - video: b.mp4\n", ["exactly one job"]),
    ("video: [unclosed\n", ["invalid YAML", "line"]),
])
def test_plan_rules_reject_with_field_and_hint(tmp_path, text, words):
    with pytest.raises(DropFolderError) as caught:
        parse_drop_plan(_plan(tmp_path, text))
    message = str(caught.value)
    assert caught.value.path == "job.plan.yaml"
    assert caught.value.hint
    for word in words:
        assert word in message


def test_plan_is_loaded_without_object_construction(tmp_path):
    marker = tmp_path / "pwned"
    text = f"video: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(DropFolderError, match="invalid YAML"):
        parse_drop_plan(_plan(tmp_path, text))
    assert not marker.exists()


def test_plan_that_is_a_symlink_is_rejected_without_reading_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("video: clip.mp4\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.symlink(secret, inbox / "job.plan.yaml")
    with pytest.raises(DropFolderError, match="symbolic link leading outside INBOX"):
        parse_drop_plan(inbox / "job.plan.yaml")


def test_empty_plan_is_rejected(tmp_path):
    with pytest.raises(DropFolderError, match="empty"):
        parse_drop_plan(_plan(tmp_path, ""))


def test_claimed_file_checks(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x" * 10)
    os.symlink(outside, inbox / "out_link.mp4")
    (inbox / "real.mp4").write_bytes(b"x" * 10)
    os.symlink(inbox / "real.mp4", inbox / "in_link.mp4")
    os.link(outside, inbox / "hard.mp4")
    (inbox / "empty.mp4").write_bytes(b"")
    with pytest.raises(DropFolderError, match="leading outside INBOX"):
        check_claimed_file(inbox / "out_link.mp4", inbox)
    with pytest.raises(DropFolderError, match="leading inside INBOX"):
        check_claimed_file(inbox / "in_link.mp4", inbox)
    with pytest.raises(DropFolderError, match="hard link"):
        check_claimed_file(inbox / "hard.mp4", inbox)
    with pytest.raises(DropFolderError, match="empty"):
        check_claimed_file(inbox / "empty.mp4", inbox)
    with pytest.raises(DropFolderError, match="disappeared"):
        check_claimed_file(inbox / "gone.mp4", inbox)
    check_claimed_file(inbox / "real.mp4", inbox)  # a plain file passes


def test_the_bundled_example_drop_plan_follows_the_drop_rules():
    from latentsync.paths import examples_dir

    plan = parse_drop_plan(examples_dir() / "dropfolder" / "greeting.plan.yaml")
    assert plan.inputs == ["greeting.mp4", "greeting_fr.wav"] and plan.output == "greeting_fr.mp4"
