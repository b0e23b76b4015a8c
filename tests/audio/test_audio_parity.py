"""CI parity: the audio path reproduces upstream LatentSync's features for the reference clip.

`../shared/reference/audio_parity/features.safetensors` was computed by the
upstream implementation (float32, CPU) from the bundled 37 s WAV and seeded
random Whisper-tiny weights. It crosses the 30 s window boundary, so an
off-by-one in windowing, padding, the mel floor or the per-frame slicing fails
here. Target: relative error < 1e-4.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from latentsync.audio.features import (
    audio_features,
    audio_frame_count,
    frame_audio_windows,
    frame_audio_windows_at_times,
)
from latentsync.models.whisper_encoder import load_whisper_encoder

RELATIVE_TOLERANCE = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).norm() / expected.norm()).item()


@pytest.fixture(scope="module")
def reference_features(audio_reference):
    return load_file(str(audio_reference / "features.safetensors"))


@pytest.fixture(scope="module")
def computed_features(audio_reference, reference_waveform):
    encoder = load_whisper_encoder(audio_reference / "whisper_tiny_encoder_random.safetensors", device="cpu")
    return audio_features(reference_waveform, encoder)


def test_features_match_upstream(computed_features, reference_features):
    expected = reference_features["features"]
    assert computed_features.shape == expected.shape == (1850, 5, 384)
    assert relative_error(computed_features, expected) < RELATIVE_TOLERANCE
    # Per-step check too: a misplaced window would hide in a global norm only if tiny.
    per_step = (computed_features - expected).flatten(1).norm(dim=1) / expected.flatten(1).norm(dim=1)
    assert per_step.max().item() < 1e-3


def test_frame_count_matches_upstream(computed_features, reference_features):
    assert audio_frame_count(len(computed_features)) == int(reference_features["num_frames"].item()) == 927


def test_frame_windows_match_upstream(computed_features, reference_features):
    frame_index = reference_features["frame_index"]
    expected = reference_features["frame_windows"]
    windows = frame_audio_windows(computed_features, frame_index)
    assert windows.shape == expected.shape == (24, 50, 384)
    assert relative_error(windows, expected) < RELATIVE_TOLERANCE
    by_time = frame_audio_windows_at_times(computed_features, frame_index.double() / 25)
    assert torch.equal(by_time, windows)

