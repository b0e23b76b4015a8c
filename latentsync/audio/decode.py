"""Decode any audio (or a video's audio track) to 16 kHz mono with PyAV.

The samples go through libswresample to signed 16-bit mono at the target
rate, then are scaled by 1/32768. That is what upstream gets from
`ffmpeg -ac 1 -ar 16000 -f s16le` (the same library and defaults), so the
features match upstream's for the same file; a 16 kHz mono int16 WAV comes out
bit-exact.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from loguru import logger

from ..errors import MediaError
from .mel import SAMPLE_RATE

_INT16_SCALE = 32768.0


def load_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples in [-1, 1) at `sample_rate` from the first audio stream of `path`.

    Raises `MediaError` naming the file when it is missing, cannot be decoded,
    has no audio stream, or decodes to zero samples.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError("audio file not found", path=path)
    if not path.is_file():
        raise MediaError("is not a file", path=path, hint="pass an audio file or a video with an audio track")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as error:
        raise MediaError(
            f"cannot be opened as audio or video ({error.strerror or type(error).__name__})",
            path=path,
            hint="supported: anything FFmpeg decodes (wav, mp3, m4a/aac, flac, mp4/mov/mkv with audio)",
        ) from error
    pieces: list[np.ndarray] = []
    try:
        if not container.streams.audio:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise MediaError(f"has no audio stream (streams: {', '.join(kinds)})", path=path)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for resampled in resampler.resample(frame):
                pieces.append(resampled.to_ndarray().reshape(-1))
        for resampled in resampler.resample(None):  # flush the resampler's delay line
            pieces.append(resampled.to_ndarray().reshape(-1))
    except av.error.FFmpegError as error:
        raise MediaError(f"audio cannot be decoded ({error.strerror or type(error).__name__})", path=path) from error
    finally:
        container.close()
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    if samples.size == 0:
        raise MediaError("audio stream holds no samples", path=path)
    logger.debug("decoded {}: {} samples at {} Hz ({:.2f} s)", path, samples.size, sample_rate, samples.size / sample_rate)
    return samples.astype(np.float32) / _INT16_SCALE
