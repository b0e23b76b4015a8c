"""Where a clip's frames and audio come from, and where the lip-synced frames go.

`LipSyncPipeline` is called on a source and a sink. Two pairs exist:
- `FileClipSource` / `VideoFileSink`: a video file (and an optional audio file) in,
  an mp4 out (streamed, atomic: nothing appears until the clip is whole);
- `ArrayClipSource` / `ArrayFrameSink`: frames and 16 kHz audio held in memory
  (ComfyUI, notebooks, the benchmark), frames out in memory.

A source opens to a `ClipMedia` (frame rate, size, frame count, the 16 kHz waveform)
and then serves any schedule of source-frame indices chunk by chunk; a sink opens to
a writer with `write_frames`. Both are small on purpose: the stages live in the
pipeline, not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..errors import MediaError

AUDIO_RATE = 16000  # Whisper's rate: every waveform in the pipeline is 16 kHz mono float32


@dataclass
class ClipMedia:
    """What the pipeline needs to know about a clip before its frames."""

    fps: float | Fraction  # exact where the container says so (the writer keeps it)
    frame_count: int
    width: int
    height: int
    waveform: np.ndarray  # 16 kHz mono float32
    audio_source: Optional[Path] = None  # the file whose audio is muxed into the output, if any

    @property
    def audio_seconds(self) -> float:
        return len(self.waveform) / AUDIO_RATE


class FileClipSource:
    """A video file, with its own audio track or a separate audio file."""

    landmarks = None  # faces are found by the face backend

    def __init__(self, video: Path, audio: Optional[Path] = None):
        self.video = Path(video)
        self.audio = Path(audio) if audio is not None else None
        self._info = None

    @property
    def name(self) -> str:
        return str(self.video)

    def open(self) -> ClipMedia:
        from ..audio.decode import load_audio
        from ..video import probe_video

        info = probe_video(self.video)
        if info.frame_count == 0:
            raise MediaError("the video holds no frames", path=self.video)
        if self.audio is None and not info.has_audio:
            raise MediaError("the video has no audio track and the plan names no audio", path=self.video,
                             hint="add `audio: speech.wav` to the job")
        audio_source = self.audio or self.video
        waveform = load_audio(audio_source, sample_rate=AUDIO_RATE)
        if len(waveform) == 0:
            raise MediaError("no audio samples to work on", path=audio_source)
        self._info = info
        width, height = info.display_size
        return ClipMedia(fps=info.fps, frame_count=info.frame_count, width=int(width), height=int(height),
                         waveform=waveform, audio_source=audio_source)

    def chunks(self, schedule: Sequence[int], chunk_frames: int) -> Iterable[Any]:
        from ..video import ScheduledFrameSource

        return ScheduledFrameSource(self.video, schedule, chunk_frames, info=self._info)

    def protected_paths(self) -> list[Path]:
        """Files an output must never replace."""
        return [p for p in (self.video, self.audio) if p is not None]


class ArrayClipSource:
    """Frames (N, H, W, 3) uint8 RGB and 16 kHz mono float32 audio held in memory.

    `landmarks` (one FaceLandmarks or None per frame), when given, are where the faces
    are: the pipeline then skips its face backend (the benchmark's clip, whose face sits
    at a known place). None: faces are detected as for any clip.
    """

    def __init__(self, frames: np.ndarray, fps: float, audio_16k: np.ndarray,
                 landmarks: Optional[Sequence[Any]] = None):
        if landmarks is not None and len(landmarks) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark entries")
        self.frames = frames
        self.fps = float(fps)
        self.audio_16k = np.asarray(audio_16k, dtype=np.float32)
        self.landmarks = landmarks

    @property
    def name(self) -> str:
        return "<memory>"

    def open(self) -> ClipMedia:
        if len(self.frames) == 0 or self.audio_16k.size == 0:
            raise MediaError("no frames or no audio samples to work on")
        height, width = self.frames.shape[1:3]
        return ClipMedia(fps=self.fps, frame_count=len(self.frames), width=int(width), height=int(height),
                         waveform=self.audio_16k)

    def chunks(self, schedule: Sequence[int], chunk_frames: int) -> Iterator[Any]:
        from ..video.reader import FrameChunk

        schedule = list(schedule)
        for start in range(0, len(schedule), chunk_frames):
            indices = schedule[start : start + chunk_frames]
            yield FrameChunk(frames=self.frames[indices].copy(), source_indices=indices, start=start)

    def protected_paths(self) -> list[Path]:
        return []


class VideoFileSink:
    """An mp4 (or other container by suffix) written while frames arrive, with the clip's audio."""

    def __init__(self, output: Path, *, inputs: Sequence[Path] = (), crf: int, preset: str):
        self.output = Path(output)
        self.inputs = list(inputs)
        self.crf, self.preset = int(crf), str(preset)

    def open(self, media: ClipMedia):
        from ..video import VideoWriter

        return VideoWriter(self.output, width=media.width, height=media.height, fps=media.fps,
                           audio=media.audio_source, inputs=self.inputs, crf=self.crf, preset=self.preset)


@dataclass
class ArrayFrameSink:
    """Collects output frames in memory; `frames()` stacks them. Reset before each attempt."""

    parts: list = field(default_factory=list)

    def open(self, media: ClipMedia) -> "ArrayFrameSink":
        self.parts.clear()  # a retried attempt (out-of-memory fallback) starts over
        return self

    def __enter__(self) -> "ArrayFrameSink":
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def write_frames(self, frames: np.ndarray) -> None:
        self.parts.append(frames)

    def frames(self, like: Optional[np.ndarray] = None) -> np.ndarray:
        if self.parts:
            return np.concatenate(self.parts)
        return like[:0] if like is not None else np.zeros((0, 0, 0, 3), np.uint8)
