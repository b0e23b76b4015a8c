"""Session fixtures: small index clips written with PyAV."""
from __future__ import annotations

from pathlib import Path

import pytest

from video_clips import write_index_clip


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video_clips")


@pytest.fixture(scope="session")
def index_clip_gop8(clip_dir) -> Path:
    """40 frames at 25 fps, keyframe every 8 frames, B-frames on."""
    return write_index_clip(clip_dir / "index_gop8.mp4", 40, 25, gop=8)


@pytest.fixture(scope="session")
def index_clip_longgop(clip_dir) -> Path:
    """50 frames at 25 fps, a single keyframe (GOP longer than the clip)."""
    return write_index_clip(clip_dir / "index_longgop.mp4", 50, 25, gop=300)
