"""Sync scoring: offsets, confidence, windows and wiring (random small weights, no fixtures)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync.errors import CheckpointError, MediaError
from latentsync.models.stable_syncnet import stack_frames, sync_probability
from latentsync.quality import SyncScorer, offset_distances, summarise
from latentsync.quality.mel import mel_window_start, syncnet_melspectrogram


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_planted_offset_is_found():
    """Audio window j carries the visual embedding of window j - 3: best offset +3 (sound lags)."""
    rng = np.random.default_rng(0)
    base = _unit(np.abs(rng.normal(size=(200, 64))))
    window_starts = list(range(20, 60))
    audio_starts = list(range(0, 100))
    visual = base[window_starts]
    audio = np.stack([base[j - 3] for j in audio_starts])
    offsets, distances, at_zero = offset_distances(visual, audio, window_starts, audio_starts, 15)
    best, minimum, confidence = summarise(offsets, distances)
    assert best == 3
    assert minimum == pytest.approx(0.0, abs=1e-12)
    assert confidence > 0.1
    assert np.all(at_zero < 1.0 - 1e-6)


def test_offsets_compare_the_same_windows_when_possible():
    """Windows 0..29 with audio frames 0..49: windows 15..34 exist at every offset +-15; the window
    whose audio is off by 3 is only among the others, so only the common ones decide."""
    rng = np.random.default_rng(2)
    base = _unit(np.abs(rng.normal(size=(100, 32))))
    window_starts = list(range(0, 30))
    audio_starts = list(range(0, 50))
    visual = base[window_starts]
    audio = base[audio_starts]
    offsets, distances, _ = offset_distances(visual, audio, window_starts, audio_starts, 15)
    common = [k for k in window_starts if k - 15 >= 0 and k + 15 <= 49]
    assert common == list(range(15, 30))
    sims = visual @ audio.T
    for column, offset in enumerate(offsets):
        expected = np.mean([1.0 - sims[k, k + offset] for k in common])
        assert distances[column] == pytest.approx(expected)
    assert summarise(offsets, distances)[0] == 0


def test_offsets_without_audio_are_ignored_and_ties_go_to_zero():
    offsets = [-2, -1, 0, 1, 2]
    distances = np.array([np.nan, 0.2, 0.2, 0.5, np.nan])
    best, minimum, confidence = summarise(offsets, distances)
    assert (best, minimum) == (0, 0.2)
    assert confidence == pytest.approx(0.0)  # median of 0.2, 0.2, 0.5 is 0.2
    with pytest.raises(Exception, match="no audio-video window pair"):
        summarise(offsets, np.full(5, np.nan))


@pytest.fixture(scope="module")
def scorer() -> SyncScorer:
    return SyncScorer.from_weights("random-small", seed=5)


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
    t = np.arange(int(16000 * 1.8)) / 16000.0
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return crops, samples


def test_scores_match_a_direct_computation(scorer, clip):
    crops, samples = clip
    score = scorer.score_crops(crops, samples)
    mel = torch.from_numpy(syncnet_melspectrogram(samples).astype(np.float32))
    assert score.window_starts == tuple(range(0, 30 - 16 + 1))
    assert score.offsets == tuple(range(-15, 16))
    assert score.random_weights and score.model == "random-small"

    starts = list(score.window_starts)
    with torch.no_grad():  # every visual window and every audio window (frames 0..) in two batches
        visual = scorer.model.embed_visual(torch.cat([stack_frames(torch.from_numpy(crops[k : k + 16])[None]) for k in starts]))
        audio_frames = [a for a in range(0, 60) if mel_window_start(a) + 52 <= mel.shape[1]]
        audio = scorer.model.embed_audio(
            torch.stack([mel[:, mel_window_start(a) : mel_window_start(a) + 52][None] for a in audio_frames])
        )
    sims = (visual @ audio.T).double().numpy()

    def pair(k: int, a: int) -> float:
        return float(sims[starts.index(k), audio_frames.index(a)])

    for index, k in enumerate(starts):
        assert score.window_similarity[index] == pytest.approx(pair(k, k), abs=1e-5)
    # offset +2: window k against audio window k + 2, over the windows whose audio exists
    valid = [k for k in starts if k + 2 in audio_frames]
    expected = np.mean([1.0 - pair(k, k + 2) for k in valid])
    assert score.distance_by_offset[score.offsets.index(2)] == pytest.approx(expected, abs=1e-5)
    # offset -5: windows 0..4 have no audio before the start
    valid = [k for k in starts if k - 5 >= 0]
    assert len(valid) == len(starts) - 5
    expected = np.mean([1.0 - pair(k, k - 5) for k in valid])
    assert score.distance_by_offset[score.offsets.index(-5)] == pytest.approx(expected, abs=1e-5)
    distances = np.array(score.distance_by_offset)
    assert np.isnan(distances[0])  # offset -15: every window starts before frame 15
    finite = distances[np.isfinite(distances)]
    assert score.min_distance == pytest.approx(finite.min())
    assert score.confidence == pytest.approx(np.median(finite) - finite.min())
    assert score.to_dict()["distance_by_offset"][0] is None  # JSON has no NaN
    assert 0.0 <= score.sync_probability <= 1.0
    assert score.seconds > 0 and set(score.stages) == {"prepare", "visual_encoder", "audio_encoder"}


def test_windows_with_a_missing_face_are_skipped(scorer, clip):
    crops, samples = clip
    has_face = np.ones(len(crops), dtype=bool)
    has_face[20] = False
    score = scorer.score_crops(crops, samples, has_face=has_face)
    assert all(not (k <= 20 < k + 16) for k in score.window_starts)
    assert score.skipped_windows == 10 and score.frames_without_face == 1


def test_audio_shorter_than_video_limits_windows(scorer, clip):
    crops, samples = clip
    score = scorer.score_crops(crops, samples[:12000])  # 0.75 s: 61 columns
    assert max(score.window_starts) == max(k for k in range(15) if mel_window_start(k) + 52 <= 61) == 3


def test_too_few_frames(scorer, clip):
    crops, samples = clip
    with pytest.raises(MediaError, match="at least 16"):
        scorer.score_crops(crops[:15], samples)


def test_no_face_anywhere(scorer, clip):
    crops, samples = clip
    with pytest.raises(MediaError, match="no 16-frame window"):
        scorer.score_crops(crops, samples, has_face=np.zeros(len(crops), dtype=bool))


def test_weights_folder_without_syncnet_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="stable_syncnet.pt") as error:
        SyncScorer.from_weights(tmp_path)
    assert "fetch-weights" in str(error.value)


def test_weights_folder_with_syncnet_loads(tmp_path, scorer):
    torch.save({"state_dict": scorer.model.state_dict()}, tmp_path / "stable_syncnet.pt")
    loaded = SyncScorer.from_weights(tmp_path, config="small")
    assert loaded.name == "stable_syncnet.pt"
    assert not loaded.random_weights and loaded.crop_resolution == 32


def test_random_full_config_reads_256_px_crops():
    from latentsync.models.stable_syncnet import StableSyncNet
    from latentsync.quality.sync import crop_resolution_of

    assert crop_resolution_of(StableSyncNet.from_config("syncnet_16_pixel_attn", meta=True).config) == 256
    assert crop_resolution_of(StableSyncNet.from_config("small", meta=True).config) == 32


def test_lower_precision_runs_and_stays_close(scorer, clip):
    crops, samples = clip
    half = SyncScorer.from_weights("random-small", seed=5, dtype=torch.bfloat16)
    reference = scorer.score_crops(crops[:20], samples, stride=4)
    low = half.score_crops(crops[:20], samples, stride=4)
    assert low.window_starts == reference.window_starts
    assert low.sync_probability == pytest.approx(reference.sync_probability, abs=0.05)


def test_lower_halves_stack_like_upstream_frames():
    from latentsync.quality.sync import stack_lower_halves

    rng = np.random.default_rng(4)
    crops = torch.from_numpy(rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8))
    assert torch.equal(stack_lower_halves(crops[:, 16:]), stack_frames(crops[None])[0])


def test_chunked_frames_give_the_same_faces(scorer):
    """Frames in chunks of any size: the same aligned lower halves (the video streams through)."""
    from latentsync.paths import examples_dir
    from latentsync.video.reader import VideoReader

    with VideoReader(examples_dir() / "assets" / "quickstart.mp4") as reader:
        frames = np.stack([frame for _, frame in zip(range(20), reader)])
    whole, faces_whole = scorer.aligned_lower_faces(frames)
    parts, faces_parts = scorer.aligned_lower_faces([frames[:7], frames[7:8], frames[8:]])
    assert whole.shape == (20, 16, 32, 3) and faces_whole.all()
    assert np.array_equal(whole, parts) and np.array_equal(faces_whole, faces_parts)
