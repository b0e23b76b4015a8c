"""Whisper's log-mel spectrogram, computed in code (no bundled filter file).

Facts (OpenAI Whisper, as LatentSync uses it): 16 kHz, n_fft 400 with a
periodic Hann window, hop 160 (100 frames/s), centred frames with reflect
padding, power spectrum, 80 Slaney mel bands (librosa's default: Slaney mel
scale, Slaney area normalisation), log10 clamped at 1e-10, floor at
(max - 8) over the whole clip, then (x + 4) / 4. The last STFT frame is dropped,
so a clip of n samples gives n // 160 mel frames.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
LOG_FLOOR_RANGE = 8.0  # dB/10: values more than 80 dB below the clip's peak are clipped


def _hz_to_mel_slaney(frequencies_hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 bands per 200 Hz) below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    log_step = np.log(6.4) / 27.0
    frequencies_hz = np.asarray(frequencies_hz, dtype=np.float64)
    linear = frequencies_hz / f_sp
    logarithmic = min_log_mel + np.log(np.maximum(frequencies_hz, min_log_hz) / min_log_hz) / log_step
    return np.where(frequencies_hz >= min_log_hz, logarithmic, linear)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    log_step = np.log(6.4) / 27.0
    mels = np.asarray(mels, dtype=np.float64)
    linear = f_sp * mels
    logarithmic = min_log_hz * np.exp(log_step * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, logarithmic, linear)


@lru_cache(maxsize=8)
def mel_filter_bank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular Slaney mel filters, (n_mels, n_fft // 2 + 1) float32, fmin 0, fmax sample_rate / 2.

    Same numbers as `librosa.filters.mel(sr, n_fft, n_mels)`, which is what
    Whisper's `mel_filters.npz` holds. Rows are cast to float32 before the area
    normalisation, as librosa does, so the rounding matches too. Read-only.
    """
    fft_frequencies = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    band_edges_mel = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sample_rate / 2.0), n_mels + 2)
    band_edges_hz = _mel_to_hz_slaney(band_edges_mel)
    edge_gaps = np.diff(band_edges_hz)
    ramps = band_edges_hz[:, None] - fft_frequencies[None, :]
    rising = -ramps[:-2] / edge_gaps[:-1, None]
    falling = ramps[2:] / edge_gaps[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    # Slaney normalisation: each triangle has unit area in Hz.
    area_norm = 2.0 / (band_edges_hz[2 : n_mels + 2] - band_edges_hz[:n_mels])
    weights = (weights * area_norm[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights


def log_mel_power(waveform: Tensor, *, chunk_frames: int = 3000) -> Tensor:
    """log10 of the mel power per frame, (N_MELS, n // HOP_LENGTH), before the floor and scaling.

    Computes the STFT `chunk_frames` frames at a time from the reflect-padded
    signal, so the complex spectrogram of a long clip is never held whole; the
    frames are the same as one centred `torch.stft` over the clip.
    """
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be 1-D (mono samples), got shape {tuple(waveform.shape)}")
    waveform = waveform.float()
    n_frames = waveform.shape[0] // HOP_LENGTH
    if waveform.shape[0] <= N_FFT // 2:
        raise ValueError(f"audio has {waveform.shape[0]} samples; at least {N_FFT // 2 + 1} are needed")
    padded = torch.nn.functional.pad(waveform[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    window = torch.hann_window(N_FFT, device=waveform.device)
    filters = torch.from_numpy(mel_filter_bank().copy()).to(waveform.device)
    pieces = []
    for first in range(0, n_frames, chunk_frames):
        count = min(chunk_frames, n_frames - first)
        segment = padded[first * HOP_LENGTH : (first + count - 1) * HOP_LENGTH + N_FFT]
        spectrum = torch.stft(segment, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        power = spectrum.abs() ** 2
        pieces.append(torch.clamp(filters @ power, min=1e-10).log10())
    return torch.cat(pieces, dim=1)


def normalize_log_mel(log_power: Tensor, clip_max: float | Tensor | None = None) -> Tensor:
    """Whisper's floor and scaling. `clip_max` is the whole clip's maximum (default: of `log_power`)."""
    if clip_max is None:
        clip_max = log_power.max()
    return (torch.maximum(log_power, torch.as_tensor(clip_max, dtype=log_power.dtype) - LOG_FLOOR_RANGE) + 4.0) / 4.0


def log_mel_spectrogram(waveform: Tensor | np.ndarray) -> Tensor:
    """Whisper log-mel of a 16 kHz mono waveform: (80, n // 160) float32, floor over the whole clip."""
    if not isinstance(waveform, Tensor):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return normalize_log_mel(log_mel_power(waveform))
