"""The mel spectrogram StableSyncNet reads (Wav2Lip's recipe, upstream `configs/audio.yaml`).

Facts (upstream `latentsync/utils/audio.py` with `configs/audio.yaml`): 16 kHz mono samples;
pre-emphasis y[n] = x[n] - 0.97 x[n-1] (y[0] = x[0]); STFT with n_fft 800, hop 200, a
periodic Hann window of 800, centred frames with **zero** padding; the magnitude |X| (not the
power); 80 mel bands between 55 and 7600 Hz (Slaney scale, Slaney area normalisation, a
float32 basis as librosa makes it); S = 20 log10(max(1e-5, M)) - 20; output
clip(8 (S + 100) / 100 - 4, -4, 4). Shape (80, 1 + n // 200): 80 columns per second.

Computed here with numpy in float64 (no librosa). The window for video frame k at 25 fps
starts at column int(80 * k / 25) and is 52 columns wide (16 frames).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..audio.mel import _hz_to_mel_slaney, _mel_to_hz_slaney

SAMPLE_RATE = 16000
N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
COLUMNS_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 80
WINDOW_FRAMES = 16
MEL_WINDOW_COLUMNS = 52  # ceil(16 / 25 s * 80 columns/s) = ceil(51.2)
VIDEO_FPS = 25.0


@lru_cache(maxsize=4)
def syncnet_mel_basis(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """Triangular Slaney mel filters between fmin and fmax, (n_mels, n_fft // 2 + 1) float32, read-only.

    The triangles are evaluated in float64 and stored in float32 before the area
    normalisation (also applied in float32), which is how librosa rounds them.
    """
    fft_frequencies = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges_mel = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    edges_hz = _mel_to_hz_slaney(edges_mel)
    gaps = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_frequencies[None, :]
    rising = -ramps[:-2] / gaps[:-1, None]
    falling = ramps[2:] / gaps[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels])
    weights *= area[:, None]  # in place: stays float32
    weights.setflags(write=False)
    return weights


def _periodic_hann(length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def stft_magnitude(samples: np.ndarray) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, 1 + n // hop) in float64, centred frames with zero padding."""
    x = np.asarray(samples, dtype=np.float64)
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="constant")
    count = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:count]
    spectrum = np.fft.rfft(frames * _periodic_hann(WIN_LENGTH), axis=1)
    return np.abs(spectrum).T


def syncnet_melspectrogram(samples: np.ndarray) -> np.ndarray:
    """(80, 1 + n // 200) float64 in [-4, 4] from 16 kHz mono samples (any float dtype)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D (mono), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("no samples")
    emphasised = np.empty_like(x)
    emphasised[0] = x[0]
    emphasised[1:] = x[1:] - PREEMPHASIS * x[:-1]
    magnitude = stft_magnitude(emphasised)
    mel = syncnet_mel_basis().astype(np.float64) @ magnitude
    min_level = np.exp(MIN_LEVEL_DB / 20.0 * np.log(10.0))  # 1e-5
    decibels = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * ((decibels - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def mel_window_start(frame_index: int, fps: float = VIDEO_FPS) -> int:
    """First mel column of the 52-column window that goes with video frame `frame_index`."""
    return int(COLUMNS_PER_SECOND * (frame_index / float(fps)))


def mel_windows(mel: np.ndarray, frame_starts, fps: float = VIDEO_FPS) -> np.ndarray:
    """(len(frame_starts), 1, 80, 52) float32 windows; raises ValueError if one runs past the end."""
    starts = [mel_window_start(int(k), fps) for k in frame_starts]
    out = np.empty((len(starts), 1, mel.shape[0], MEL_WINDOW_COLUMNS), dtype=np.float32)
    for row, start in enumerate(starts):
        if start < 0 or start + MEL_WINDOW_COLUMNS > mel.shape[1]:
            raise ValueError(f"mel window at column {start} runs past the spectrogram ({mel.shape[1]} columns)")
        out[row, 0] = mel[:, start : start + MEL_WINDOW_COLUMNS]
    return out
