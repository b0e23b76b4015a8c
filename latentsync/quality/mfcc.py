"""MFCCs as the original SyncNet reads them: python_speech_features' `mfcc` with its defaults.

Upstream's SyncNet evaluation (`eval/syncnet/syncnet_eval.py`) calls
`python_speech_features.mfcc(audio, 16000)` (version 0.6) on the int16 samples of a 16 kHz mono
wav. This is the same recipe in numpy, written from that package's documented defaults (no
dependency on it); `tests/quality/test_syncnet_v2_parity.py` compares it with the package's
output stored in `tests/fixtures/syncnet_v2/`:

- pre-emphasis 0.97 (`y[0] = x[0]`, `y[n] = x[n] - 0.97 x[n-1]`);
- frames of 400 samples (25 ms) every 160 (10 ms), no window; the signal is zero-padded to
  cover a whole number of frames (one frame when it is shorter than one);
- power spectrum `|rfft(frame, 512)|^2 / 512`; frame energy = its sum (0 -> float eps);
- 26 triangular mel filters from 0 Hz to 8 kHz on FFT bins `floor(513 mel2hz(m) / 16000)`
  (mel = 2595 log10(1 + hz / 700)); filter energies (0 -> eps), natural log;
- DCT-II, orthonormal, first 13 coefficients; lifter 22 (`1 + 11 sin(pi n / 22)`);
- coefficient 0 replaced by the log frame energy.

Returns (frames, 13) float64: 100 rows per second, so the 0.2 s under five video frames at
25 fps is 20 rows. Samples are int16-scaled (as `wavfile.read` gives them): float samples in
[-1, 1) are multiplied by 32768 first (`int16_scale`).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 0.025 s
FRAME_STEP = 160  # 0.01 s
ROWS_PER_SECOND = SAMPLE_RATE // FRAME_STEP  # 100
NFFT = 512
FILTERS = 26
COEFFICIENTS = 13
PREEMPHASIS = 0.97
LIFTER = 22
EPS = np.finfo(float).eps


def int16_scale(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) (what `latentsync.audio.decode.load_audio` returns) -> the int16
    values upstream's wav holds, as float64 (rounded half to even and clipped, as FFmpeg converts)."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(filters: int = FILTERS, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(filters, nfft // 2 + 1) triangular filters on whole FFT bins."""
    points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(points) / sample_rate)
    bank = np.zeros((filters, nfft // 2 + 1))
    for j in range(filters):
        low, centre, high = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(low), int(centre)):
            bank[j, i] = (i - low) / (centre - low)
        for i in range(int(centre), int(high)):
            bank[j, i] = (high - i) / (high - centre)
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=4)
def _dct_matrix(size: int, keep: int) -> np.ndarray:
    """Orthonormal DCT-II as a (size, keep) matrix: x @ M = dct(x, type=2, norm='ortho')[:keep]."""
    n = np.arange(size)[:, None]
    k = np.arange(keep)[None, :]
    matrix = np.cos(math.pi * k * (2 * n + 1) / (2 * size)) * math.sqrt(2.0 / size)
    matrix[:, 0] /= math.sqrt(2.0)
    matrix.setflags(write=False)
    return matrix


def frame_count(samples: int) -> int:
    """Rows `mfcc` returns for `samples` samples."""
    if samples <= FRAME_LENGTH:
        return 1
    return 1 + int(math.ceil((samples - FRAME_LENGTH) / FRAME_STEP))


def mfcc(signal: np.ndarray) -> np.ndarray:
    """(frames, 13) MFCCs of int16-scaled 16 kHz mono samples (see the module docstring)."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mfcc of an empty signal")
    emphasised = np.append(x[0], x[1:] - PREEMPHASIS * x[:-1])
    count = frame_count(emphasised.size)
    padded = np.zeros((count - 1) * FRAME_STEP + FRAME_LENGTH)
    padded[: emphasised.size] = emphasised
    index = np.arange(FRAME_LENGTH)[None, :] + FRAME_STEP * np.arange(count)[:, None]
    frames = padded[index]
    power = np.square(np.abs(np.fft.rfft(frames, NFFT))) / NFFT
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, EPS, energy)
    energies = power @ mel_filterbank().T
    energies = np.where(energies == 0, EPS, energies)
    cepstra = np.log(energies) @ _dct_matrix(FILTERS, COEFFICIENTS)
    cepstra *= 1.0 + (LIFTER / 2.0) * np.sin(math.pi * np.arange(COEFFICIENTS) / LIFTER)
    cepstra[:, 0] = np.log(energy)
    return cepstra
