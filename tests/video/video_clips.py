"""Helpers for the video tests: clips whose frames carry their own index, audio files,
stream durations. Imported by the tests as a plain module (tests/ has no packages)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

INDEX_BITS = 10  # up to 1024 frames
STRIPE_WIDTH = 8
CLIP_HEIGHT = 32


def index_frame(index: int, width: int = INDEX_BITS * STRIPE_WIDTH, height: int = CLIP_HEIGHT) -> np.ndarray:
    """Frame whose vertical stripes spell `index` in binary (white = 1). Wide
    stripes and pure black/white survive lossy H.264 intact."""
    frame = np.zeros((height, width, 3), np.uint8)
    for bit in range(INDEX_BITS):
        if index >> bit & 1:
            frame[:, bit * STRIPE_WIDTH : (bit + 1) * STRIPE_WIDTH] = 255
    return frame


def read_index(frame: np.ndarray) -> int:
    """Inverse of index_frame, reading each stripe's centre."""
    value = 0
    for bit in range(INDEX_BITS):
        stripe = frame[4:-4, bit * STRIPE_WIDTH + 2 : (bit + 1) * STRIPE_WIDTH - 2]
        if stripe.mean() > 127:
            value |= 1 << bit
    return value


def write_index_clip(
    path: Path,
    n_frames: int,
    fps: Fraction | int = 25,
    *,
    gop: int = 250,
    bframes: int = 2,
    codec: str = "libx264",
    audio_seconds: float | None = None,
    audio_rate: int = 16000,
    faststart: bool = False,
) -> Path:
    """H.264 clip of `n_frames` index frames with a chosen keyframe interval (and optional audio)."""
    container = av.open(str(path), mode="w", options={"movflags": "+faststart"} if faststart else {})
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.width = INDEX_BITS * STRIPE_WIDTH
    stream.height = CLIP_HEIGHT
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": str(bframes), "crf": "20"}
    time_base = 1 / Fraction(fps)
    audio = None
    if audio_seconds:
        audio = container.add_stream("aac", rate=audio_rate, layout="mono")
    for i in range(n_frames):
        frame = av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")
        frame.pts = i
        frame.time_base = time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    if audio is not None:
        total = int(audio_seconds * audio_rate)
        t = np.arange(total) / audio_rate
        samples = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for start in range(0, total, 1024):
            block = samples[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            frame.sample_rate = audio_rate
            frame.pts = start
            frame.time_base = Fraction(1, audio_rate)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    container.close()
    return path


def write_audio_file(path: Path, seconds: float, rate: int = 44100, channels: int = 2) -> Path:
    """A PCM WAV of a quiet tone (for muxing from a file)."""
    container = av.open(str(path), mode="w")
    layout = "mono" if channels == 1 else "stereo"
    stream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
    total = int(seconds * rate)
    t = np.arange(total) / rate
    tone = (0.2 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)
    for start in range(0, total, 4096):
        block = np.repeat(tone[None, start : start + 4096], channels, axis=0)
        frame = av.AudioFrame.from_ndarray(block.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return path


def stream_durations(path: Path) -> dict[str, float | None]:
    """Duration in seconds of the first video and audio streams."""
    with av.open(str(path)) as container:
        out: dict[str, float | None] = {"video": None, "audio": None}
        for kind in ("video", "audio"):
            streams = getattr(container.streams, kind)
            if streams and streams[0].duration is not None:
                out[kind] = float(streams[0].duration * streams[0].time_base)
        return out


def decoded_audio_samples(path: Path) -> int:
    """Samples per channel actually decoded from the first audio stream (edit lists applied)."""
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(container.streams.audio[0]))


