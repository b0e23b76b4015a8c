"""Audio features for LatentSync: Whisper hidden states at 50 Hz and per-video-frame windows.

How upstream LatentSync builds them (these are the facts the reference
fixture pins down, and what this module reproduces):

- the log-mel of the whole clip is computed once, its floor (max - 8) taken
  over the whole clip;
- the mel is cut into 30 s windows of 3000 frames; the last one is zero-padded
  to 3000;
- each window runs through the encoder and keeps (window mel frames) // 2
  steps of the 1500 it returns, so a clip of n mel frames yields n // 2 steps;
- video frame i (25 fps) takes steps 2i-4 .. 2i+5 clamped to [0, steps-1],
  5 hidden states each: 50 tokens of 384;
- a clip of `steps` features yields `steps // 2 + 2` video frames at 25 fps
  (upstream's loop appends a frame before testing its stop condition).

The encoder runs window by window (optionally a few windows per batch), so
memory during encoding is one batch of windows; the result is held in the
storage dtype the caller picks (`float16` halves a 10-minute clip's 230 MB).
`iter_audio_features` yields the windows lazily for callers that stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .mel import HOP_LENGTH, SAMPLE_RATE, log_mel_power, normalize_log_mel

if TYPE_CHECKING:
    from ..models.whisper_encoder import WhisperEncoder

FEATURE_RATE = 50  # encoder steps per second (100 mel frames/s, conv stride 2)
MODEL_FPS = 25  # the video rate LatentSync was trained at
STEPS_BEFORE = 4  # frame i's window starts 2 frames (4 steps) before its centre ...
STEPS_AFTER = 5  # ... and ends 2 frames after it, inclusive of that frame's 2 steps
STEPS_PER_FRAME_WINDOW = STEPS_BEFORE + 1 + STEPS_AFTER  # 10

# Times are floats; a frame time i/fps lands a hair below its step boundary in binary.
# Half a nanosecond of slack makes floor(50 t) agree with upstream's int(i * 50 / fps).
_TIME_SLACK_STEPS = 1e-6


@dataclass
class AudioFeatureWindow:
    """One 30 s window's share of the features: steps [start_step, start_step + len(features))."""

    start_step: int
    features: Tensor  # (steps, n_layer + 1, n_state)


def _as_waveform(waveform_16k: np.ndarray | Tensor) -> Tensor:
    if isinstance(waveform_16k, np.ndarray):
        waveform_16k = torch.from_numpy(np.ascontiguousarray(waveform_16k, dtype=np.float32))
    if waveform_16k.ndim != 1:
        raise ValueError(f"waveform must be 1-D mono at {SAMPLE_RATE} Hz, got shape {tuple(waveform_16k.shape)}")
    return waveform_16k.float()


@torch.no_grad()
def iter_audio_features(
    waveform_16k: np.ndarray | Tensor,
    encoder: "WhisperEncoder",
    *,
    windows_per_batch: int = 1,
    storage_dtype: torch.dtype = torch.float32,
    storage_device: str | torch.device = "cpu",
) -> Iterator[AudioFeatureWindow]:
    """Encode a 16 kHz mono waveform window by window; yields `AudioFeatureWindow`s in order.

    The log-mel is computed on the CPU over the whole clip (80 floats per
    10 ms: 19 MB for 10 minutes) because its floor depends on the whole clip;
    the encoder then sees one batch of 30 s windows at a time on its own device
    and dtype.
    """
    if windows_per_batch < 1:
        raise ValueError(f"windows_per_batch must be >= 1, got {windows_per_batch}")
    log_power = log_mel_power(_as_waveform(waveform_16k).cpu())
    mel = normalize_log_mel(log_power)
    del log_power
    window_frames = encoder.n_mel_frames
    n_frames = mel.shape[1]
    starts = list(range(0, n_frames, window_frames))
    parameter = next(encoder.parameters())
    for batch_first in range(0, len(starts), windows_per_batch):
        batch_starts = starts[batch_first : batch_first + windows_per_batch]
        batch = torch.zeros(len(batch_starts), mel.shape[0], window_frames)
        kept_steps = []
        for row, start in enumerate(batch_starts):
            end = min(start + window_frames, n_frames)
            batch[row, :, : end - start] = mel[:, start:end]
            kept_steps.append((end - start) // 2)
        hidden = encoder(batch.to(device=parameter.device, dtype=parameter.dtype)).hidden_states
        for row, start in enumerate(batch_starts):
            yield AudioFeatureWindow(
                start_step=start // 2,
                features=hidden[row, : kept_steps[row]].to(device=storage_device, dtype=storage_dtype),
            )


def audio_features(
    waveform_16k: np.ndarray | Tensor,
    encoder: "WhisperEncoder",
    *,
    windows_per_batch: int = 1,
    storage_dtype: torch.dtype = torch.float32,
    storage_device: str | torch.device = "cpu",
) -> Tensor:
    """Whisper features of a 16 kHz mono clip: (n_samples // 320, n_layer + 1, n_state).

    For Whisper tiny that is (steps, 5, 384) at 50 steps per second. Pass
    `storage_dtype=torch.float16` to halve the memory of long clips (the
    encoder still computes in its own dtype).
    """
    waveform = _as_waveform(waveform_16k)
    n_steps = feature_steps_for_samples(waveform.shape[0])
    features: Tensor | None = None
    # Filled in place, window by window: the result is never held twice (a cat would double the peak).
    for window in iter_audio_features(
        waveform, encoder, windows_per_batch=windows_per_batch,
        storage_dtype=storage_dtype, storage_device=storage_device,
    ):
        if features is None:
            features = torch.empty((n_steps, *window.features.shape[1:]), dtype=storage_dtype, device=storage_device)
        features[window.start_step : window.start_step + len(window.features)] = window.features
    assert features is not None and window.start_step + len(window.features) == n_steps
    return features


def audio_frame_count(n_steps: int, fps: float | Fraction = MODEL_FPS) -> int:
    """Video frames upstream derives from `n_steps` features at `fps`: n_steps // 2 + 2 at 25 fps.

    Upstream appends frame i and stops after the first i whose start step
    int(i * 50 / fps) exceeds n_steps; that i is ceil((n_steps + 1) * fps / 50),
    and the count is one more.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    rate = Fraction(fps).limit_denominator(1_000_000) if isinstance(fps, float) else Fraction(fps)
    if rate <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return math.ceil((n_steps + 1) * rate / FEATURE_RATE) + 1


def _windows_around(features: Tensor, centre_steps: Tensor) -> Tensor:
    if features.ndim != 3:
        raise ValueError(f"features must be (steps, hidden_states, dim), got shape {tuple(features.shape)}")
    if features.shape[0] == 0:
        raise ValueError("features are empty (no audio steps)")
    offsets = torch.arange(-STEPS_BEFORE, STEPS_AFTER + 1, device=features.device)
    steps = (centre_steps.to(features.device)[:, None] + offsets[None, :]).clamp_(0, features.shape[0] - 1)
    windows = features[steps]  # (n, 10, hidden_states, dim)
    return windows.reshape(windows.shape[0], -1, features.shape[-1])


def frame_audio_windows(features: Tensor, frame_indices: Sequence[int] | Tensor | np.ndarray) -> Tensor:
    """Audio tokens for 25 fps video frames: (n, 10 * hidden_states, dim), i.e. (n, 50, 384) for tiny.

    Frame i takes steps 2i-4 .. 2i+5, each clamped to the available steps,
    step-major (the 5 hidden states of step 2i-4 first).
    """
    indices = torch.as_tensor(np.asarray(frame_indices), dtype=torch.long).reshape(-1)
    return _windows_around(features, indices * (FEATURE_RATE // MODEL_FPS))


def frame_audio_windows_at_times(features: Tensor, frame_times_s: Sequence[float] | Tensor | np.ndarray) -> Tensor:
    """Audio tokens for frames shown at arbitrary times (sources not at 25 fps).

    The centre step is floor(50 * t), which for t = i / 25 is 2i, so this equals
    `frame_audio_windows` there. Pass float64 times (float32 loses the step
    boundary after a few minutes). For t = i / fps this is upstream's
    int(i * 50 / fps) except where upstream's float division lands a hair
    under an exact integer (e.g. 24000/1001 fps, frame 480); this takes the
    exact value.
    """
    times = torch.as_tensor(np.asarray(frame_times_s, dtype=np.float64)).reshape(-1)
    if torch.any(times < 0) or not torch.all(torch.isfinite(times)):
        raise ValueError("frame times must be finite and >= 0")
    centres = torch.floor(times * FEATURE_RATE + _TIME_SLACK_STEPS).long()
    return _windows_around(features, centres)


def feature_steps_for_samples(n_samples: int) -> int:
    """Steps `audio_features` returns for `n_samples` at 16 kHz (n // 160 mel frames, halved)."""
    return (n_samples // HOP_LENGTH) // 2
