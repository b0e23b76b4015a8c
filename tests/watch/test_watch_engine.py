"""The drop folder with the real rules engine (fake pipeline): hot reload of a copy of
rules/v1 through an invalid edit and its fix, and a dropped plan validated by the engine."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from latentsync.paths import default_rules_dir
from latentsync.testing.fake_pipeline import FakePipeline, make_fake_video
from watch_helpers import RunningWatcher, make_config, settled, wait_until

engine = pytest.importorskip("latentsync.engine")
if not hasattr(engine, "load_ruleset"):
    pytest.skip("the rules engine is not there yet", allow_module_level=True)


def report_of(outbox, name):
    return json.loads((outbox / f"{name}.mp4.report.json").read_text())


def test_real_rules_invalid_edit_keeps_last_good_then_fix_is_used(tmp_path):
    inbox, outbox, rules = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "rules" / "v1"
    inbox.mkdir()
    shutil.copytree(default_rules_dir(), rules)
    target = rules / "00_defaults.yaml"
    original = target.read_text()
    assert "      steps: 20\n" in original
    with RunningWatcher(make_config(inbox, outbox, rules), rules_loader=engine.load_ruleset) as running:
        make_fake_video(inbox / "first.mp4", seed=1)
        wait_until(settled(inbox, outbox, 1))
        # Editor-style save (temp file + rename) of an invalid edit: an unknown setting.
        (rules / ".00_defaults.yaml.tmp").write_text(original.replace("      steps: 20\n", "      stepz: 20\n"))
        os.rename(rules / ".00_defaults.yaml.tmp", target)
        wait_until(lambda: running.watcher.rules.rejected >= 1)
        assert "stepz" in str(running.watcher.rules.last_error)
        make_fake_video(inbox / "second.mp4", seed=2)
        wait_until(settled(inbox, outbox, 2))
        (rules / ".00_defaults.yaml.tmp").write_text(original.replace("      steps: 20\n", "      steps: 24\n"))
        os.rename(rules / ".00_defaults.yaml.tmp", target)
        wait_until(lambda: running.watcher.rules.reloads == 1)
        make_fake_video(inbox / "third.mp4", seed=3)
        wait_until(settled(inbox, outbox, 3))
    first, second, third = (report_of(outbox, n) for n in ("first", "second", "third"))
    assert first["rules_hash"] == second["rules_hash"], "the invalid edit never ran"
    assert third["rules_hash"] != first["rules_hash"], "the fixed edit did"
    assert len(first["rules_hash"]) == 64 and first["rules_version"] == "v1"


def test_dropped_plan_rejected_by_the_engine_names_file_line_and_field(tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    make_fake_video(inbox / "clip.mp4")
    (inbox / "greedy.plan.yaml").write_text("video: clip.mp4\noutput: clip_synced.mp4\noverrides:\n  steps: 500\n")
    from latentsync.watch import Watcher

    pipeline = FakePipeline()
    Watcher(make_config(inbox, outbox, default_rules_dir()), executor=pipeline,
            rules_loader=engine.load_ruleset).run(once=True)
    error = json.loads((inbox / "failed" / "greedy.error.json").read_text())
    assert "greedy.plan.yaml:4" in error["why"] and "overrides.steps" in error["why"]
    assert "processing" not in error["why"] and pipeline.calls == []


def test_hot_reload_swaps_in_only_rules_that_are_proven(tmp_path):
    """Rules that validate but cannot resolve (a derive cycle) or break their own policy tests are
    kept out; clips keep running with the last good rules and none is blamed for the rules."""
    from latentsync.watch.rules_reload import default_rules_loader

    inbox, outbox, rules = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "rules" / "v1"
    inbox.mkdir()
    shutil.copytree(default_rules_dir(), rules)
    with RunningWatcher(make_config(inbox, outbox, rules), rules_loader=default_rules_loader) as running:
        make_fake_video(inbox / "first.mp4", seed=1)
        wait_until(settled(inbox, outbox, 1), timeout=30)
        (rules / "15_cycle.yaml").write_text(
            "schema_version: 1\nstage: derive\nrules:\n"
            "  - {id: c.a, description: x, priority: 50, when: {clip_class: short}, set: {gpu_tier: 8gb}}\n"
            "  - {id: c.b, description: x, priority: 50, when: {gpu_tier: 8gb}, set: {clip_class: long}}\n")
        wait_until(lambda: running.watcher.rules.rejected == 1, timeout=30)
        assert "derive rules form a cycle" in str(running.watcher.rules.last_error)
        (rules / "15_cycle.yaml").unlink()
        (rules / "tests" / "zz_wrong.yaml").write_text(
            "schema_version: 1\ncases:\n  - name: wrong on purpose\n    gpu: rtx4090-24gb\n    duration: 3\n"
            "    expect:\n      settings: {steps: 99}\n")
        wait_until(lambda: running.watcher.rules.rejected == 2, timeout=30)
        assert "policy test 'wrong on purpose' fails" in str(running.watcher.rules.last_error)
        make_fake_video(inbox / "second.mp4", seed=2)
        wait_until(settled(inbox, outbox, 2), timeout=30)
        assert running.watcher.rules.reloads == 0
    first, second = report_of(outbox, "first"), report_of(outbox, "second")
    assert first["rules_hash"] == second["rules_hash"]
    assert not (inbox / "failed").exists() or not any((inbox / "failed").iterdir())
