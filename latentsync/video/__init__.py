"""Streaming video I/O on PyAV: probe, chunked decode, frame schedules, atomic encode + mux.

Attributes load lazily so `import latentsync.video` stays cheap (PyAV is only
imported when a reader, writer or probe is first used).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "VideoInfo": ".probe",
    "probe_video": ".probe",
    "count_frames": ".probe",
    "VideoReader": ".reader",
    "ScheduledFrameSource": ".reader",
    "FrameChunk": ".reader",
    "VideoWriter": ".writer",
    "check_output_writable": ".writer",
    "check_video_output": ".writer",
    "video_encoder_name": ".writer",
    "plan_output_frames": ".schedule",
    "frames_covering_audio": ".schedule",
    "pingpong_index": ".schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
