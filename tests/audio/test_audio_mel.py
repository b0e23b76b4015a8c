"""The log-mel front end: filter bank computed in code, Whisper's framing and whole-clip floor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync.audio.mel import (
    HOP_LENGTH,
    N_FFT,
    log_mel_power,
    log_mel_spectrogram,
    mel_filter_bank,
)


def test_filter_bank_matches_whisper_asset(audio_reference):
    shipped = np.load(audio_reference / "mel_filters.npz")["mel_80"]
    computed = mel_filter_bank()
    assert computed.shape == shipped.shape == (80, 201)
    assert computed.dtype == np.float32
    np.testing.assert_allclose(computed, shipped, rtol=1e-6, atol=1e-9)


def test_filter_bank_is_slaney_area_normalised():
    bank = mel_filter_bank().astype(np.float64)
    bin_hz = 16000 / N_FFT
    # Each triangle integrates to ~1 over Hz (area normalisation), within the error of 40 Hz bins.
    areas = bank.sum(axis=1) * bin_hz
    assert np.all(bank >= 0)
    np.testing.assert_allclose(areas[10:], 1.0, rtol=0.1)
    assert abs(areas[10:].mean() - 1.0) < 0.02
    # Peaks move up in frequency; the Slaney scale is linear (equal gaps) below 1 kHz.
    peaks = bank.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)
    assert bank[:, 0].sum() == 0.0  # band 0 starts at 0 Hz with weight 0


def _reference_log_mel(waveform: np.ndarray) -> torch.Tensor:
    """Whisper's recipe in one centred STFT over the whole clip (the way upstream does it)."""
    audio = torch.from_numpy(waveform)
    spectrum = torch.stft(audio, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = spectrum[:, :-1].abs() ** 2
    log_spec = torch.clamp(torch.from_numpy(mel_filter_bank().copy()) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("n_samples", [201, 16000, 16000 * 3 + 77])
def test_chunked_stft_equals_one_centred_stft(n_samples):
    rng = np.random.default_rng(n_samples)
    waveform = (rng.standard_normal(n_samples) * 0.1).astype(np.float32)
    expected = _reference_log_mel(waveform)
    # Chunks of 7 frames force many chunk seams through the clip.
    chunked = torch.cat([log_mel_power(torch.from_numpy(waveform), chunk_frames=7)], dim=1)
    log_spec = torch.maximum(chunked, chunked.max() - 8.0)
    assert chunked.shape == (80, n_samples // HOP_LENGTH)
    torch.testing.assert_close((log_spec + 4.0) / 4.0, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(log_mel_spectrogram(waveform), expected, rtol=0, atol=1e-6)


def test_floor_is_taken_over_the_whole_clip():
    # Loud first second, near-silent rest: the quiet part's floor comes from the loud part.
    rng = np.random.default_rng(0)
    waveform = np.concatenate([rng.standard_normal(16000), 1e-6 * rng.standard_normal(48000)]).astype(np.float32)
    mel = log_mel_spectrogram(waveform)
    quiet_only = log_mel_spectrogram(waveform[16000:])
    clip_floor = (mel.max() * 4 - 4 - 8 + 4) / 4  # (max_log - 8 + 4) / 4 in scaled units
    assert torch.isclose(mel[:, 120:].min(), clip_floor, atol=1e-6)
    assert quiet_only.min() < clip_floor - 0.5  # a per-window floor would keep much lower values


def test_rejects_multichannel_and_too_short_audio():
    with pytest.raises(ValueError, match="1-D"):
        log_mel_spectrogram(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 201"):
        log_mel_spectrogram(np.zeros(200, dtype=np.float32))
