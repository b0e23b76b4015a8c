"""`latentsync-bench --quality CLIP`: every goal on the user's clip through the user's run path,
StableSyncNet scores, drops and PSNR against the quality goal, written into this card's benchmark
entry's `quality` section; the facts `sync_drop_preview` / `sync_drop_balanced` the rules read
come from that very cache. Random-small weights on a CPU: the code path is real, the numbers are not."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from latentsync.bench.quality import QUALITY_GOALS, write_quality_section
from latentsync.cli.bench import main as bench_main
from latentsync.cli.rules import main as rules_main
from latentsync.engine import gather_facts, load_ruleset, resolve_plan, schema_errors
from latentsync.facts import benchmark_key, gpu_facts_from_profile, update_benchmark_cache
from latentsync.facts.benchmark import QUALITY_SECTIONS
from latentsync.jobs import JobSpec
from latentsync.quality.psnr import lower_face_psnr
from latentsync.testing.pipeline_helpers import quickstart_assets, short_speech

CARD = "rtx4060-8gb"  # an 8 GB card: auto picks preview for a 60 s clip, the goal a drop can move


@pytest.fixture(scope="module")
def card():
    return gpu_facts_from_profile(CARD, load_ruleset().gpu_profiles[CARD])


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return short_speech(tmp_path_factory.mktemp("speech") / "speech.wav", 0.8)  # 20 frames: one scored window


def _speed_entry(gpu) -> dict:
    return {"key": benchmark_key(gpu), "measured_at": "2026-12-01T10:00:00", "max_frames_per_batch": 16,
            "peak_vram_gib": 7.0, "precision": "fp16",
            "modes": {"fast": {"seconds_per_video_second": 5.0, "frames_per_batch": 16}}}


def _entries(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    assert schema_errors(data, "benchmark_cache") == []
    return data["entries"]


def _auto_plan(cache: Path):
    """What auto resolves for a 60 s clip on the card, reading `cache` as latentsync-run would."""
    ruleset = load_ruleset()
    job = JobSpec(video=Path("not-there.mp4"), output=Path("out.mp4"), weights="random",
                  assume={"gpu": CARD, "duration": 60})
    return resolve_plan(job, gather_facts(job, ruleset, benchmark_cache=cache), ruleset)


def _set_drop(cache: Path, goal: str, drop: float) -> None:
    data = json.loads(cache.read_text())
    data["entries"][-1]["quality"][goal]["sync_drop"] = drop
    cache.write_text(json.dumps(data))


@pytest.mark.slow  # three tiny runs and three scores: about 20 s on a 2-core CPU
def test_the_cache_the_quality_bench_writes_is_the_cache_the_rules_read(tmp_path, monkeypatch, card, speech, capsys):
    # The rules ignore CPU entries, so the entry is keyed by a named card; the runs are this CPU's.
    monkeypatch.setattr("latentsync.bench.quality.probe_gpu", lambda: card)
    cache = tmp_path / "benchmark.json"
    update_benchmark_cache(cache, _speed_entry(card))  # a speed benchmark measured before
    video, _ = quickstart_assets()
    out_json, kept = tmp_path / "quality.json", tmp_path / "outputs"
    code = bench_main(["--quality", str(video), "--audio", str(speech), "--weights", "random-small",
                       "--cache", str(cache), "--tiny", "--no-progress", "--json", str(out_json),
                       "--outputs", str(kept)])
    text = capsys.readouterr().out
    assert code == 0
    # the table: one line per goal, the reference marked, the random-weights warning
    assert "WARNING: random weights" in text
    for goal in QUALITY_GOALS:
        assert any(line.split()[:1] == [goal] for line in text.splitlines()), goal
    header = next(line for line in text.splitlines() if line.startswith("goal"))
    assert header.split() == ["goal", "plan", "s/video-s", "gpu", "s/video-s", "sync", "p", "confidence", "offset",
                              "drop", "PSNR", "dB"]

    [entry] = _entries(cache)
    # the speed measurements stayed; the quality section and where it came from were added
    assert entry["modes"] == _speed_entry(card)["modes"] and entry["max_frames_per_batch"] == 16
    assert entry["measured_at"] == "2026-12-01T10:00:00" and entry["key"] == benchmark_key(card)
    assert set(entry["quality"]) == set(QUALITY_GOALS)
    run = entry["quality_run"]
    assert run["clip"] == "quickstart.mp4" and run["audio"] == "speech.wav" and run["weights_kind"] == "random-small"
    assert run["smoke_run"] is True and run["metric"] == "confidence" and run["clip_seconds"] > 0.7
    reference = entry["quality"]["quality"]
    assert reference["sync_drop"] == 0 and reference["psnr_vs_quality"] is None
    for goal in ("balanced", "preview"):
        item = entry["quality"][goal]
        assert item["seconds_per_video_second"] > 0 and 0.0 <= item["sync_probability"] <= 1.0
        # sync_drop is the reference's confidence minus the goal's, as the scores say
        assert item["sync_drop"] == pytest.approx(reference["sync_confidence"] - item["sync_confidence"], abs=2e-6)
        assert item["psnr_vs_quality"] is not None and item["psnr_vs_quality"] > 0
    report = json.loads(out_json.read_text())
    assert [goal["goal"] for goal in report["goals"]] == list(QUALITY_GOALS)
    assert report["entry"] == entry and report["random_weights"] is True
    # --outputs keeps each goal's video and job report (the warm-up's are removed)
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        f"quickstart.{goal}.mp4{suffix}" for goal in QUALITY_GOALS for suffix in ("", ".report.json"))

    # The facts the rules read come from that entry...
    plan = _auto_plan(cache)
    assert plan.facts["sync_drop_preview"] == round(entry["quality"]["preview"]["sync_drop"], 4)
    assert plan.facts["sync_drop_balanced"] == round(entry["quality"]["balanced"]["sync_drop"], 4)
    # ...and move auto's goal once a drop passes the tolerance (rules/v1/22_goal_sync.yaml)
    _set_drop(cache, "preview", 0.0)
    _set_drop(cache, "balanced", 0.0)
    assert _auto_plan(cache).goal == "preview"
    _set_drop(cache, "preview", 0.5)
    moved = _auto_plan(cache)
    assert moved.goal == "balanced" and moved.facts["goal_auto"] == "preview"
    assert "goal.auto.sync-preview-drop" in moved.fired_rules
    # latentsync-rules explain cites the measured facts and the move
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("video: clip.mp4\noutput: out.mp4\nweights: random\ngoal: auto\n")
    assert rules_main(["explain", str(plan_file), "--assume-gpu", CARD, "--duration", "60",
                       "--benchmark-cache", str(cache)]) == 0
    explained = capsys.readouterr().out
    assert "goal balanced" in explained
    assert "sync_drop_preview 0.5" in explained and "auto's choice preview -> goal balanced" in explained


def test_a_speed_run_keeps_the_quality_section_and_a_quality_run_keeps_the_speed_results(tmp_path, card):
    cache = tmp_path / "benchmark.json"
    section = {"quality": {"sync_confidence": 0.3, "sync_drop": 0.0},
               "preview": {"sync_confidence": 0.2, "sync_drop": 0.1, "psnr_vs_quality": 30.0}}
    run = {"measured_at": "2026-12-02T10:00:00", "clip": "c.mp4", "clip_seconds": 3.0, "weights_kind": "checkpoint"}
    # no entry for the card yet: a quality-only entry, no speed facts claimed
    entry = write_quality_section(cache, card, section, run)
    assert entry["modes"] == {} and "max_frames_per_batch" not in entry
    plan = _auto_plan(cache)
    assert plan.facts["sync_drop_preview"] == 0.1 and "bench_max_frames_per_batch" not in plan.facts
    assert not any(rule.startswith("bench.") for rule in plan.fired_rules)
    # a speed benchmark of the same card and software replaces the entry but keeps the quality sections
    update_benchmark_cache(cache, _speed_entry(card), keep=QUALITY_SECTIONS)
    [entry] = _entries(cache)
    assert entry["quality"] == section and entry["quality_run"] == run and entry["max_frames_per_batch"] == 16
    # without `keep` the entry is replaced whole (what --clear and other callers get)
    update_benchmark_cache(cache, _speed_entry(card))
    assert "quality" not in _entries(cache)[0]
    # a quality run keeps every other measured field of the entry
    write_quality_section(cache, card, section, run)
    [entry] = _entries(cache)
    assert {key: value for key, value in entry.items() if key not in QUALITY_SECTIONS} == _speed_entry(card)


def _write_clip(path: Path, *, audio=None, frames: int = 20) -> Path:
    from latentsync.video import VideoWriter

    with VideoWriter(path, width=64, height=64, fps=25, audio=audio) as writer:
        for _ in range(frames):
            writer.write(np.full((64, 64, 3), 120, np.uint8))
    return path


@pytest.mark.parametrize("case", ["missing", "unreadable", "no-audio", "no-weights", "no-syncnet"])
def test_clear_errors_before_any_work(tmp_path, capsys, case, speech):
    video, _ = quickstart_assets()  # no audio track of its own: the quickstart has a separate speech file
    args = {"missing": [str(tmp_path / "nowhere.mp4"), "--weights", "random-small"],
            "no-audio": [str(video), "--weights", "random-small"],
            "no-weights": [str(video), "--audio", str(speech)],
            "no-syncnet": [str(video), "--audio", str(speech), "--weights", str(tmp_path)]}
    if case == "unreadable":
        (tmp_path / "bad.mp4").write_text("not a video")
        args[case] = [str(tmp_path / "bad.mp4"), "--weights", "random-small"]
    cache = tmp_path / "benchmark.json"
    assert bench_main(["--quality", *args[case], "--cache", str(cache), "--no-progress"]) == 2
    error = capsys.readouterr().err
    expected = {"missing": "nowhere.mp4: clip not found", "unreadable": "bad.mp4: not a readable media file",
                "no-audio": "the clip has no audio track", "no-weights": "--quality needs --weights DIR",
                "no-syncnet": "stable_syncnet.pt"}[case]
    assert expected in error
    if case == "no-syncnet":
        assert str(tmp_path / "stable_syncnet.pt") in error
    assert not cache.exists()


@pytest.mark.slow  # one warm-up run of a faceless clip: a few seconds
def test_a_clip_without_a_face_is_an_error_and_leaves_the_cache(tmp_path, capsys, speech):
    clip = _write_clip(tmp_path / "wall.mp4", audio=str(speech))
    cache = tmp_path / "benchmark.json"
    assert bench_main(["--quality", str(clip), "--weights", "random-small", "--cache", str(cache), "--tiny",
                       "--no-progress"]) == 2
    assert "no face detected in any frame" in capsys.readouterr().err
    assert not cache.exists()


def test_flags_that_need_or_refuse_quality(capsys):
    for argv in (["--audio", "a.wav"], ["--quality", "c.mp4", "--clear"], ["--quality", "c.mp4", "--quick"]):
        with pytest.raises(SystemExit) as exit_info:
            bench_main(argv)
        assert exit_info.value.code == 2


def test_lower_face_psnr(tmp_path):
    from latentsync.video import VideoWriter

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    paths = []
    for name, shift in (("a.mp4", 0), ("b.mp4", 40)):
        with VideoWriter(tmp_path / name, width=64, height=64, fps=25) as writer:
            for frame in frames:
                writer.write(np.clip(frame.astype(int) + shift, 0, 255).astype(np.uint8))
        paths.append(tmp_path / name)
    assert math.isinf(lower_face_psnr(paths[0], paths[0]))
    value = lower_face_psnr(paths[0], paths[1])
    assert 0 < value < 30
