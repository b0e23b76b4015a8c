"""ComfyUI's media types <-> the library's arrays. Pure functions; torch imported on use.

IMAGE: torch float32 (N, H, W, 3) in 0..1. AUDIO: {"waveform": (B, C, S) float, "sample_rate": int}.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError, MediaError

_CONVERT_BATCH = 64  # frames converted at once: bounds the float temporary


def image_to_frames(images: Any):
    """IMAGE -> (N, H, W, 3) uint8 numpy, rounded like ComfyUI's savers."""
    import numpy as np
    import torch

    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise InvalidInputError(
            f"images: expected a batch of RGB frames (N, H, W, 3), got shape {tuple(images.shape)}",
            hint="connect the frames of a video (e.g. GetVideoComponents or VHS LoadVideo); drop any alpha channel",
        )
    out = np.empty(tuple(images.shape), dtype=np.uint8)
    for start in range(0, images.shape[0], _CONVERT_BATCH):
        part = images[start : start + _CONVERT_BATCH].detach().to("cpu", torch.float32)
        out[start : start + len(part)] = (part.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).numpy()
    return out


def frames_to_image(frames: Any):
    """(N, H, W, 3) uint8 numpy -> IMAGE (float32 0..1 on the CPU)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


def audio_to_wave(audio: Any) -> tuple[Any, int]:
    """AUDIO -> ((channels, samples) float32 numpy of the first batch item, sample_rate)."""
    import numpy as np

    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise MediaError(
            "audio: expected ComfyUI AUDIO ({'waveform': (B, C, S), 'sample_rate': int})",
            hint="connect LoadAudio or the audio output of a video loader",
        )
    waveform = audio["waveform"]
    wave = waveform.detach().to("cpu").float().numpy() if hasattr(waveform, "detach") else np.asarray(waveform, np.float32)
    if wave.ndim == 3:
        wave = wave[0]
    if wave.ndim == 1:
        wave = wave[None]
    sample_rate = int(audio["sample_rate"])
    if wave.ndim != 2 or wave.shape[-1] == 0 or sample_rate <= 0:
        raise MediaError(f"audio: holds no samples (waveform shape {tuple(np.shape(waveform))}, rate {sample_rate})",
                         hint="check the audio file the loader reads")
    return np.ascontiguousarray(wave, dtype=np.float32), sample_rate


def audio_seconds(audio: Any) -> float:
    wave, rate = audio_to_wave(audio)
    return wave.shape[-1] / rate


def trimmed_audio(wave: Any, sample_rate: int, seconds: float) -> dict:
    """(channels, samples) at its own rate, cut to `seconds` -> AUDIO with batch 1."""
    import torch

    keep = min(wave.shape[-1], int(round(seconds * sample_rate)))
    return {"waveform": torch.from_numpy(wave[:, :keep].copy())[None], "sample_rate": int(sample_rate)}
