"""Feature windowing: 30 s encoder windows and per-video-frame token windows."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from latentsync.audio.features import (
    audio_features,
    audio_frame_count,
    feature_steps_for_samples,
    frame_audio_windows,
    frame_audio_windows_at_times,
    iter_audio_features,
)
from latentsync.audio.mel import log_mel_spectrogram
from latentsync.models.whisper_encoder import WhisperEncoderConfig, random_whisper_encoder

# 100 mel frames (1 s) per encoder window keeps multi-window tests fast.
SMALL = WhisperEncoderConfig(n_mels=80, n_ctx=50, n_state=64, n_head=2, n_layer=2)


def coded_features(n_steps: int, n_states: int = 5, dim: int = 3) -> torch.Tensor:
    """features[s, l, :] == 10 * s + l, so every token says which step and state it came from."""
    steps = torch.arange(n_steps, dtype=torch.float32)[:, None, None] * 10
    states = torch.arange(n_states, dtype=torch.float32)[None, :, None]
    return (steps + states).expand(n_steps, n_states, dim).contiguous()


def upstream_window_steps(n_steps: int, frame: int, fps: float = 25) -> list[int]:
    """Mirror of upstream get_sliced_feature's index arithmetic (audio_feat_length [2, 2])."""
    centre = int(frame * 50 / fps)
    return [min(max(idx, 0), n_steps - 1) for idx in range(centre - 4, centre + 6)]


def upstream_frame_count(n_steps: int, fps: float) -> int:
    """Mirror of upstream feature2chunks' loop: append, then stop once the start step passes the end."""
    count = 0
    while True:
        start = int(count * (50.0 / fps))
        count += 1
        if start > n_steps:
            return count


def expected_tokens(steps: list[int], n_states: int = 5) -> torch.Tensor:
    return torch.tensor([10.0 * s + l for s in steps for l in range(n_states)])


@pytest.mark.parametrize("frame", [0, 1, 2, 3, 10, 44, 45, 46])
def test_frame_window_is_steps_2i_minus_4_to_2i_plus_5_clamped(frame):
    n_steps = 93
    windows = frame_audio_windows(coded_features(n_steps), [frame])
    assert windows.shape == (1, 50, 3)
    steps = [min(max(s, 0), n_steps - 1) for s in range(2 * frame - 4, 2 * frame + 6)]
    assert steps == upstream_window_steps(n_steps, frame)
    torch.testing.assert_close(windows[0, :, 0], expected_tokens(steps))


def test_frame_windows_batch_and_dtype():
    features = coded_features(40).half()
    windows = frame_audio_windows(features, torch.tensor([5, 0, 19]))
    assert windows.dtype == torch.float16 and windows.shape == (3, 50, 3)
    torch.testing.assert_close(windows[1].float(), frame_audio_windows(features.float(), [0])[0])


def test_at_times_equals_25fps_rule_for_every_frame():
    features = coded_features(20001, n_states=1, dim=1)
    frames = np.arange(10001)
    by_index = frame_audio_windows(features, frames)
    by_time = frame_audio_windows_at_times(features, frames / 25)
    assert torch.equal(by_index, by_time)


@pytest.mark.parametrize(
    "fps", [Fraction(24), Fraction(30), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(50), Fraction(25, 2)]
)
def test_at_times_centres_on_exact_step_for_other_rates(fps):
    """Centre step = floor(50 i / fps) in exact arithmetic, from float64 times i / fps.

    Upstream computes int(i * 50 / fps) in floats, which at an exact boundary can
    land one step low (23.976 fps, frame 480: 1000.999... for 1001); upstream
    only ever runs at 25 fps, where both agree (test above).
    """
    n_steps = 3000
    features = coded_features(n_steps, n_states=1, dim=1)
    frames = np.arange(int(n_steps / 50 * fps) + 3)
    windows = frame_audio_windows_at_times(features, frames / float(fps))
    centres = [(i * 50 * fps.denominator) // fps.numerator for i in frames.tolist()]
    expected = torch.stack([
        expected_tokens([min(max(s, 0), n_steps - 1) for s in range(c - 4, c + 6)], n_states=1) for c in centres
    ])
    torch.testing.assert_close(windows[:, :, 0], expected)


def test_at_times_rejects_negative_or_nan():
    with pytest.raises(ValueError, match="finite"):
        frame_audio_windows_at_times(coded_features(10), [0.0, -0.1])
    with pytest.raises(ValueError, match="finite"):
        frame_audio_windows_at_times(coded_features(10), [float("nan")])


@pytest.mark.parametrize("n_steps", [0, 1, 2, 3, 1849, 1850, 1851, 30000])
@pytest.mark.parametrize("fps", [25, 24.0, 30000 / 1001, 60.0])
def test_frame_count_matches_upstream_loop(n_steps, fps):
    assert audio_frame_count(n_steps, fps) == upstream_frame_count(n_steps, fps)
    if fps == 25:
        assert audio_frame_count(n_steps) == n_steps // 2 + 2


def test_frame_count_accepts_exact_rates():
    assert audio_frame_count(1850, Fraction(30000, 1001)) == upstream_frame_count(1850, 30000 / 1001)


def _encoder():
    return random_whisper_encoder(SMALL, seed=11)


def test_windows_keep_half_their_mel_frames_and_pad_the_last_with_zeros():
    rng = np.random.default_rng(5)
    waveform = (0.1 * rng.standard_normal(int(2.37 * 16000) + 55)).astype(np.float32)
    encoder = _encoder()
    features = audio_features(waveform, encoder)
    mel = log_mel_spectrogram(waveform)
    assert mel.shape[1] == 237
    assert features.shape == (118, 3, 64) and feature_steps_for_samples(waveform.size) == 118
    # Independent composition: whole-clip mel, cut at 100 frames, last cut zero-padded, keep len // 2 steps.
    parts = []
    with torch.no_grad():
        for start in range(0, 237, 100):
            window = mel[:, start : start + 100]
            padded = torch.nn.functional.pad(window, (0, 100 - window.shape[1]))
            parts.append(encoder(padded[None]).hidden_states[0, : window.shape[1] // 2])
    torch.testing.assert_close(features, torch.cat(parts), rtol=1e-5, atol=1e-6)


def test_iterator_batches_and_storage_dtype():
    rng = np.random.default_rng(6)
    waveform = torch.from_numpy((0.1 * rng.standard_normal(16000 * 4 + 480)).astype(np.float32))
    encoder = _encoder()
    windows = list(iter_audio_features(waveform, encoder))
    assert [w.start_step for w in windows] == [0, 50, 100, 150, 200]
    assert [len(w.features) for w in windows] == [50, 50, 50, 50, 1]
    one_by_one = torch.cat([w.features for w in windows])
    batched = audio_features(waveform, encoder, windows_per_batch=3, storage_dtype=torch.float16)
    assert batched.dtype == torch.float16 and batched.shape == one_by_one.shape
    torch.testing.assert_close(batched.float(), one_by_one, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="windows_per_batch"):
        audio_features(waveform, encoder, windows_per_batch=0)


def test_rejects_stereo_waveform():
    with pytest.raises(ValueError, match="mono"):
        audio_features(np.zeros((2, 16000), dtype=np.float32), _encoder())
