"""libx264 runs on several threads (PyAV's default thread_type pins it to one), in the same output format."""
from __future__ import annotations

import re

import av
import numpy as np
import pytest

from latentsync.video import VideoWriter
from latentsync.video.writer import video_encoder_name

pytestmark = pytest.mark.skipif(video_encoder_name() != "libx264", reason="this FFmpeg build has no libx264")


def x264_settings(path) -> dict[str, str]:
    """x264 writes its settings into the stream (an SEI message): `threads=3 sliced_threads=0 ...`."""
    found = re.search(rb"x264 - core .*? options: ([^\x00]*)", path.read_bytes())
    assert found, "no x264 settings in the file"
    return dict(item.split("=", 1) for item in found.group(1).decode("ascii", "replace").split() if "=" in item)


def write_clip(path, **kwargs):
    rng = np.random.default_rng(0)
    with VideoWriter(path, width=96, height=64, fps=25, **kwargs) as writer:
        for index in range(6):
            writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    return path


def test_x264_runs_frame_threads(tmp_path):
    settings = x264_settings(write_clip(tmp_path / "two.mp4", encoder_options={"threads": "2"}))
    # with PyAV's default thread_type (SLICE) FFmpeg runs x264 on one thread: threads=1
    assert settings["threads"] == "2" and settings["sliced_threads"] == "0"
    settings = x264_settings(write_clip(tmp_path / "one.mp4", encoder_options={"threads": "1"}))
    assert settings["threads"] == "1"  # a pinned count (bit-identical output across machines) still wins


def test_output_format_is_unchanged(tmp_path):
    path = write_clip(tmp_path / "c.mp4")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.codec_context.width, stream.codec_context.height) == (96, 64)
        assert sum(1 for _ in container.decode(stream)) == 6
