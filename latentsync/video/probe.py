"""What a video file holds: size, exact frame rate, frame count, audio.

Probing opens the container, reads the header, and decodes the first video
frame (so a file whose header looks fine but whose data is garbage fails here,
before any model loads). Nothing else is decoded.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from ..errors import MediaError


@dataclass(frozen=True)
class VideoInfo:
    """Facts about one video file. Sizes are as coded; `rotation` says how to display them."""

    path: str
    width: int
    height: int
    fps: Fraction  # exact (e.g. 30000/1001)
    frame_count: int
    frame_count_exact: bool  # True: from the container's sample table; False: duration x fps
    duration_s: float
    codec: str
    pix_fmt: str | None
    rotation: int  # degrees counter-clockwise the picture must turn for display (0, 90, 180, 270)
    has_audio: bool
    audio_duration_s: float | None
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None

    @property
    def fps_float(self) -> float:
        return float(self.fps)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after applying `rotation`."""
        if self.rotation % 180 == 90:
            return self.height, self.width
        return self.width, self.height

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        data["fps_float"] = self.fps_float
        return data


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a media file for reading; any failure becomes a MediaError naming the file."""
    path = Path(path)
    if not path.exists():
        raise MediaError("file not found", path=path, hint="check the path in the plan")
    if path.is_dir():
        raise MediaError("is a folder, not a media file", path=path)
    if path.stat().st_size == 0:
        raise MediaError("file is empty (0 bytes)", path=path)
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise MediaError(f"not a readable media file ({exc})", path=path) from exc


def stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's frame rate as an exact fraction, from the most trustworthy field."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            rate = Fraction(rate)
            # Containers without a frame rate sometimes report the time base
            # (e.g. 90000/1); no real video runs above 1000 fps.
            if rate <= 1000:
                return rate
    return None


def _rotation_degrees(frame: av.VideoFrame) -> int:
    try:
        rotation = int(round(getattr(frame, "rotation", 0) or 0))
    except (TypeError, ValueError):
        return 0
    return rotation % 360


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's facts. Raises MediaError (naming the file) for anything unusable:
    missing, empty, not a media file, no video stream, no decodable frame, no frame rate.
    """
    path = Path(path)
    container = open_input(path)
    try:
        if not container.streams.video:
            raise MediaError("has no video stream", path=path, hint="pass a video file (mp4, mov, mkv, ...)")
        stream = container.streams.video[0]
        fps = stream_fps(stream)
        if fps is None:
            raise MediaError("video stream has no frame rate", path=path)

        duration_s = _seconds(stream.duration, stream.time_base)
        if duration_s is None and container.duration is not None:
            duration_s = container.duration / av.time_base

        frame_count = int(stream.frames or 0)
        exact = frame_count > 0
        if not exact and duration_s:
            frame_count = int(round(duration_s * float(fps)))

        # Decode one frame: proves the data is decodable and gives the rotation.
        first = None
        try:
            for first in container.decode(stream):
                break
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(f"video data cannot be decoded ({exc})", path=path) from exc
        if first is None or frame_count == 0:
            raise MediaError("video stream holds no frames", path=path)
        if duration_s is None:
            duration_s = frame_count / float(fps)

        audio = container.streams.audio[0] if container.streams.audio else None
        audio_duration_s = None
        if audio is not None:
            audio_duration_s = _seconds(audio.duration, audio.time_base)
            if audio_duration_s is None and audio.frames and audio.sample_rate:
                # Rough: frames are codec packets of unknown length; prefer the container.
                audio_duration_s = container.duration / av.time_base if container.duration else None

        return VideoInfo(
            path=str(path),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=fps,
            frame_count=frame_count,
            frame_count_exact=exact,
            duration_s=float(duration_s),
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            rotation=_rotation_degrees(first),
            has_audio=audio is not None,
            audio_duration_s=audio_duration_s,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            audio_channels=int(audio.codec_context.channels) if audio is not None else None,
        )
    finally:
        container.close()


def count_frames(path: str | os.PathLike) -> int:
    """Exact frame count by demuxing every video packet (no decoding). Slower than probe."""
    container = open_input(path)
    try:
        if not container.streams.video:
            raise MediaError("has no video stream", path=path)
        stream = container.streams.video[0]
        count = 0
        for packet in container.demux(stream):
            # The demuxer ends with an empty flush packet; it is not a frame.
            if packet.size:
                count += 1
        return count
    finally:
        container.close()


__all__ = ["VideoInfo", "probe_video", "count_frames", "open_input", "stream_fps"]
