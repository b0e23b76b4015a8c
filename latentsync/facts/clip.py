"""What the clip is: duration, frame rate, size, audio. Probed with PyAV, or pinned by the plan."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import MediaError

# Used only when nothing is known about the frame rate (no video file, no pinned fps):
# LatentSync is trained on 25 fps video.
MODEL_FPS = 25.0


@dataclass(frozen=True)
class ClipFacts:
    duration_s: float
    fps: float
    frame_count: int
    width: Optional[int]
    height: Optional[int]
    audio_present: bool
    audio_duration_s: Optional[float]
    source: str  # "probe" | "assumed" | "probe+assumed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipFacts":
        return cls(**data)


def probe_audio_duration(path: Path) -> float:
    """Seconds of audio in a file (WAV, MP3, M4A, or a video's audio track)."""
    import av

    if not Path(path).is_file():
        raise MediaError("audio file not found", path=path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError("has no audio stream", path=path)
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
            # No header duration: count decoded samples (rare; raw streams).
            samples = sum(frame.samples for frame in container.decode(stream))
            return samples / float(stream.rate or 1)
    except MediaError:
        raise
    except Exception as error:  # av.error.FFmpegError and friends
        raise MediaError(f"not a readable audio file ({error})", path=path) from error


def probe_clip(video: Path, audio: Optional[Path] = None) -> ClipFacts:
    """Facts of a video file (and of a separate audio file when the job has one)."""
    from ..video.probe import probe_video

    info = probe_video(video)
    width, height = info.display_size
    if audio is not None:
        audio_present, audio_duration = True, probe_audio_duration(audio)
    else:
        audio_present, audio_duration = info.has_audio, info.audio_duration_s
    return ClipFacts(duration_s=float(info.duration_s), fps=float(info.fps), frame_count=int(info.frame_count),
                     width=int(width), height=int(height), audio_present=bool(audio_present),
                     audio_duration_s=audio_duration, source="probe")


def assumed_clip(duration_s: float, fps: Optional[float] = None) -> ClipFacts:
    fps = float(fps) if fps else MODEL_FPS
    return ClipFacts(duration_s=float(duration_s), fps=fps, frame_count=int(round(duration_s * fps)),
                     width=None, height=None, audio_present=True, audio_duration_s=float(duration_s),
                     source="assumed")


def pin_duration(clip: ClipFacts, duration_s: float) -> ClipFacts:
    return ClipFacts(duration_s=float(duration_s), fps=clip.fps, frame_count=int(round(duration_s * clip.fps)),
                     width=clip.width, height=clip.height, audio_present=clip.audio_present,
                     audio_duration_s=clip.audio_duration_s, source="probe+assumed")
