"""Sync evaluation as reports and batch tables carry it; the drop a goal is judged by."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from latentsync.quality import SyncScorer
from latentsync.quality.report import SyncEvaluation, evaluate_sync, summary, sync_drop, sync_table
from latentsync.paths import examples_dir


@pytest.fixture(scope="module")
def score():
    scorer = SyncScorer.from_weights("random-small", seed=1)
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    samples = (0.2 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)
    return scorer.score_crops(crops, samples, stride=4)


def test_drop_is_reference_minus_candidate(score):
    worse = replace(score, confidence=score.confidence - 0.03, sync_probability=score.sync_probability - 0.1)
    assert sync_drop(score, worse) == pytest.approx(0.03)
    assert sync_drop(score, worse, "sync_probability") == pytest.approx(0.1)
    assert sync_drop(worse, score) == pytest.approx(-0.03)
    with pytest.raises(ValueError, match="unknown sync metric"):
        sync_drop(score, worse, "psnr")


def test_report_entry_is_compact_json(score):
    better = replace(score, confidence=score.confidence + 0.05)
    entry = SyncEvaluation(output=better, input=score, seconds=1.5).to_report()
    json.dumps(entry, allow_nan=False)
    assert entry["random_weights"] is True and entry["model"] == "random-small"
    assert set(entry["output"]) == set(summary(score)) and "window_similarity" not in entry["output"]
    assert entry["drop"]["confidence"] == pytest.approx(-0.05)  # the output is better synced
    assert SyncEvaluation(output=score, input=None, seconds=1.0).to_report()["drop"] is None


def test_table_lines(score):
    table = sync_table([("clip1", SyncEvaluation(output=score, input=score, seconds=2.0)), ("clip2", None)])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["job", "in", "p"]
    assert lines[1].startswith("clip1 (random weights)") and f"{score.sync_probability:.3f}" in lines[1]
    assert lines[2].split()[0] == "clip2" and lines[2].split()[1:] == ["-"] * 6
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1  # aligned columns


@pytest.mark.slow
def test_evaluate_input_and_output_videos():
    """The quickstart clip as both input and output (the code path; the numbers are meaningless)."""
    assets = examples_dir() / "assets"
    scorer = SyncScorer.from_weights("random-small")
    evaluation = evaluate_sync(scorer, output_video=assets / "quickstart.mp4", audio=assets / "quickstart_speech.wav",
                               input_video=assets / "quickstart.mp4", stride=15)
    assert evaluation.drop() == {"confidence": 0.0, "sync_probability": 0.0}  # same video, same audio
    assert evaluation.seconds >= evaluation.output.seconds + evaluation.input.seconds - 1e-6
