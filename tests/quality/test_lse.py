"""LSE-C / LSE-D: offsets and their sign, face tracks, strict loading of syncnet_v2.model, reports."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from latentsync.contracts import schema_errors
from latentsync.errors import CheckpointError, InvalidInputError, MediaError
from latentsync.jobs import JobReport, JobSpec
from latentsync.models.syncnet_v2 import (
    SYNCNET_V2_FILE,
    SyncNetV2,
    expected_shapes,
    load_syncnet_v2,
    seeded_state_dict,
)
from latentsync.quality import SyncScorer
from latentsync.quality.lse import (
    LseScorer,
    face_tracks,
    find_syncnet_v2,
    lse_distances,
    lse_scorer_for,
    lse_summary,
)
from latentsync.quality.report import SyncEvaluation

FPS = 25.0


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet_v2") / SYNCNET_V2_FILE
    torch.save(seeded_state_dict(5), path)
    return path


@pytest.fixture(scope="module")
def scorer():
    return LseScorer.from_weights("random", seed=5, min_track_frames=6)


def _clip(frames: int, seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, size=(frames, 224, 224, 3), dtype=np.uint8)
    samples = (0.3 * np.sin(np.arange(int(16000 * seconds)) / 5.0) * rng.random(int(16000 * seconds))).astype(np.float32)
    return crops, samples


# -- distances and their summary ------------------------------------------------------------------

def test_offset_sign_follows_upstream_and_the_project():
    """Audio window k + 2 carries lip window k's embedding: the sound lags the picture by 2 frames."""
    rng = np.random.default_rng(0)
    lip = rng.normal(size=(40, 8))
    audio = np.zeros_like(lip)
    audio[2:] = lip[:-2]
    audio[:2] = rng.normal(size=(2, 8))
    distances = lse_distances(lip, audio, vshift=5)
    assert distances.shape == (40, 11)
    # column j compares lip i with audio i + j - vshift; a zero row stands in beyond the ends
    assert distances[0, 0] == pytest.approx(np.linalg.norm(lip[0] + 1e-6))
    assert distances[10, 7] == pytest.approx(np.linalg.norm(lip[10] - audio[12] + 1e-6))
    av_offset, lse_d, lse_c, means = lse_summary(distances, vshift=5)
    assert av_offset == -2  # upstream's sign: the matching audio comes later
    assert lse_d == pytest.approx(means.min()) and lse_d < 0.5
    assert lse_c == pytest.approx(np.median(means) - means.min()) and lse_c > 1.0


def test_distances_need_matching_shapes():
    with pytest.raises(InvalidInputError):
        lse_distances(np.zeros((3, 4)), np.zeros((4, 4)))


def test_face_tracks_keep_runs_long_enough():
    has_face = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], dtype=bool)
    assert face_tracks(has_face, 5) == [(4, 9), (11, 17)]
    assert face_tracks(has_face, 7) == []
    assert face_tracks(np.ones(4, bool), 4) == [(0, 4)]


# -- scoring crops --------------------------------------------------------------------------------

def test_score_crops_windows_follow_upstream_min_length(scorer):
    crops, samples = _clip(14, 0.5)  # 0.5 s = 12.5 frames of audio: min_length 12, windows 0..6
    score = scorer.score_crops(crops, samples, fps=FPS)
    assert score.windows == 7 and score.frames == 14 and len(score.tracks) == 1
    assert score.random_weights and score.model == "random"
    assert score.best_offset == -score.av_offset and len(score.tracks[0].distance_by_offset) == 31
    assert score.lse_d == pytest.approx(min(score.tracks[0].distance_by_offset))
    json.dumps(score.to_dict(), allow_nan=False)


def test_tracks_are_scored_apart_and_averaged(scorer):
    crops, samples = _clip(20, 0.8, seed=1)
    has_face = np.ones(20, bool)
    has_face[9] = False
    score = scorer.score_crops(crops, samples, fps=FPS, has_face=has_face)
    assert [(t.start, t.frames) for t in score.tracks] == [(0, 9), (10, 10)]
    assert score.frames_without_face == 1
    assert score.lse_c == pytest.approx(np.mean([t.lse_c for t in score.tracks]))
    assert score.lse_d == pytest.approx(np.mean([t.lse_d for t in score.tracks]))
    # the second track is scored on the audio under it: the same as scoring it alone
    alone = scorer.score_crops(crops[10:], samples[10 * 640 : 20 * 640], fps=FPS)
    assert alone.lse_d == pytest.approx(score.tracks[1].lse_d, rel=1e-6)


def test_short_or_faceless_clips_are_errors(scorer):
    crops, samples = _clip(8, 0.32)
    with pytest.raises(MediaError, match="no face track"):
        scorer.score_crops(crops, samples, has_face=np.zeros(8, bool))
    with pytest.raises(MediaError, match="too short"):
        scorer.score_crops(crops, samples[:2000])  # 0.125 s of audio: 3 frames
    with pytest.raises(InvalidInputError, match="224"):
        scorer.score_crops(crops[:, :100], samples)


def test_default_track_length_is_upstreams():
    crops, samples = _clip(50, 2.0)
    with pytest.raises(MediaError, match="at least 51"):
        LseScorer.from_weights("random").score_crops(crops, samples)


# -- loading --------------------------------------------------------------------------------------

def test_loads_strictly_and_equals_the_file(seeded_file):
    model = load_syncnet_v2(seeded_file)
    expected = torch.load(seeded_file, weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert not model.training


@pytest.mark.parametrize("form", ["wrapped", "prefixed", "no_counters"])
def test_upstream_forms_load(tmp_path, form):
    weights = seeded_state_dict(2)
    if form == "wrapped":
        data = {"state_dict": weights}
    elif form == "prefixed":  # a state dict of upstream's SyncNetEval wrapper
        data = {"__S__." + key: value for key, value in weights.items()}
    else:  # saved before torch had BatchNorm counters
        data = {key: value for key, value in weights.items() if not key.endswith("num_batches_tracked")}
    path = tmp_path / SYNCNET_V2_FILE
    torch.save(data, path)
    model = load_syncnet_v2(path)
    assert torch.equal(model.netcnnlip[0].weight, weights["netcnnlip.0.weight"])


def test_a_mismatched_checkpoint_names_the_file_and_the_key(tmp_path):
    weights = seeded_state_dict(2)
    weights["netfclip.3.weight"] = torch.zeros(512, 512)
    del weights["netcnnaud.0.bias"]
    path = tmp_path / SYNCNET_V2_FILE
    torch.save(weights, path)
    with pytest.raises(CheckpointError) as caught:
        load_syncnet_v2(path)
    message = str(caught.value)
    assert SYNCNET_V2_FILE in message and "netcnnaud.0.bias" in message and "netfclip.3.weight" in message


def test_a_stable_syncnet_checkpoint_is_refused(tmp_path):
    from latentsync.models.stable_syncnet import StableSyncNet

    path = tmp_path / SYNCNET_V2_FILE
    torch.save({"state_dict": StableSyncNet.from_config("small").state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit the original SyncNet"):
        load_syncnet_v2(path)


def test_code_in_the_file_is_refused(tmp_path):
    path = tmp_path / SYNCNET_V2_FILE
    torch.save({"netcnnaud.0.weight": SyncNetV2}, path)  # pickles a class: weights_only refuses it
    with pytest.raises(CheckpointError):
        load_syncnet_v2(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=SYNCNET_V2_FILE):
        load_syncnet_v2(tmp_path / SYNCNET_V2_FILE)
    with pytest.raises(CheckpointError, match=SYNCNET_V2_FILE):
        LseScorer.from_weights(tmp_path)
    with pytest.raises(CheckpointError, match=SYNCNET_V2_FILE):
        lse_scorer_for(tmp_path, required=True)
    assert lse_scorer_for(tmp_path) is None and lse_scorer_for("random-small") is None


def test_found_at_the_top_or_under_auxiliary(tmp_path, seeded_file):
    aux = tmp_path / "auxiliary"
    aux.mkdir()
    (aux / SYNCNET_V2_FILE).write_bytes(seeded_file.read_bytes())
    assert find_syncnet_v2(tmp_path) == aux / SYNCNET_V2_FILE
    scorer = lse_scorer_for(tmp_path)
    assert scorer is not None and not scorer.random_weights and scorer.name == SYNCNET_V2_FILE
    (tmp_path / SYNCNET_V2_FILE).write_bytes(seeded_file.read_bytes())
    assert find_syncnet_v2(tmp_path) == tmp_path / SYNCNET_V2_FILE


def test_expected_shapes_cover_both_towers():
    shapes = expected_shapes()
    assert shapes["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
    assert shapes["netcnnaud.18.weight"] == (512, 256, 5, 4)
    assert shapes["netfcaud.3.weight"] == (1024, 512)
    assert sum(1 for key in shapes if key.endswith("running_var")) == 14


# -- job report -----------------------------------------------------------------------------------

def test_report_entry_carries_lse_and_validates(scorer):
    sync = SyncScorer.from_weights("random-small", seed=1)
    rng = np.random.default_rng(3)
    sync_score = sync.score_crops(rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8),
                                  (0.2 * np.sin(np.arange(16000) / 7.0)).astype(np.float32), stride=4)
    crops, samples = _clip(14, 0.6)
    lse = scorer.score_crops(crops, samples)
    entry = SyncEvaluation(output=sync_score, input=sync_score, seconds=1.0, lse_output=lse).to_report()
    assert entry["output"]["lse_c"] == lse.lse_c and entry["output"]["lse_d"] == lse.lse_d
    assert entry["output"]["lse_av_offset"] == lse.av_offset
    assert "lse_c" not in entry["input"]  # the input was not scored with LSE
    spec = JobSpec(video="a.mp4", output="b.mp4")
    report = JobReport(job=spec.to_dict(), status="ok", output="b.mp4", run_plan={}, evaluation={"sync": entry})
    assert schema_errors(report.to_dict(), "job_report") == []
    bad = dict(report.to_dict(), evaluation={"sync": {**entry, "output": {**entry["output"], "lse_d": "far"}}})
    assert schema_errors(bad, "job_report")
    assert replace(lse, lse_c=1.0).summary()["lse_c"] == 1.0
