"""`landmark_precision` reaches the aligner: `pixel` (upstream, the default) rounds, `subpixel` does not."""
from __future__ import annotations

import numpy as np
import pytest

from latentsync.errors import InvalidInputError
from latentsync.pipeline.clips import ClipMedia
from latentsync.pipeline.lipsync import ParallelCpuStages
from latentsync.testing.pipeline_helpers import default_settings


def _aligner(**changes):
    media = ClipMedia(fps=25.0, frame_count=10, width=64, height=48, waveform=np.zeros(16000, np.float32))
    with ParallelCpuStages(default_settings(device="cpu", precision="fp32", **changes), media, detect=False) as cpu:
        return cpu.aligner


def test_the_default_is_upstreams_rounding():
    assert default_settings().landmark_precision == "pixel"
    assert _aligner().round_landmarks is True


def test_subpixel_keeps_the_points():
    assert _aligner(landmark_precision="subpixel").round_landmarks is False


def test_other_values_are_refused():
    with pytest.raises(InvalidInputError, match="landmark_precision"):
        default_settings(landmark_precision="quarter")
