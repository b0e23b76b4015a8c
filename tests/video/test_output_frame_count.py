"""The output length is upstream's: one frame per Whisper audio window (`feature2chunks`)."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentsync.errors import InvalidInputError
from latentsync.video.schedule import OUTPUT_FRAMES_RULE, frames_covering_audio, output_frame_count


def upstream_feature2chunks_count(n_samples: int, fps: float) -> int:
    """Oracle written the way upstream's Audio2Feature.feature2chunks reads: append frame i,
    then stop once its start step int(i * 50 / fps) lies past the last feature step."""
    n_steps = (n_samples // 160) // 2  # Whisper: 100 mel frames/s, conv stride 2 (audio_features)
    multiplier = 50.0 / fps
    chunks, i = 0, 0
    while True:
        start = int(i * multiplier)
        chunks += 1
        i += 1
        if start > n_steps:
            break
    return chunks


def test_three_seconds_at_25_fps_make_77_frames():
    assert frames_covering_audio(48000 / 16000, 25) == 75
    assert output_frame_count(48000, 25) == 77 == upstream_feature2chunks_count(48000, 25.0)
    assert "steps // 2 + 2" in OUTPUT_FRAMES_RULE


@settings(max_examples=300, deadline=None)
@given(n_samples=st.integers(min_value=320, max_value=16000 * 120),
       fps=st.sampled_from([25, 24, 30, 50, 60, 23.976]))
def test_output_frames_follow_upstreams_loop(n_samples, fps):
    count = output_frame_count(n_samples, fps)
    assert count == upstream_feature2chunks_count(n_samples, float(fps))
    covered = frames_covering_audio(n_samples / 16000, fps)
    # never fewer than the audio covers; at most ceil(fps / 50) + 1 more (2 at 25 fps)
    assert covered <= count <= covered + math.ceil(fps / 50) + 1


def test_at_25_fps_never_more_than_two_extra_frames():
    extra = {output_frame_count(n, 25) - frames_covering_audio(n / 16000, 25) for n in range(320, 48000, 7)}
    assert extra <= {0, 1, 2} and 2 in extra


def test_ntsc_rate_as_a_fraction():
    assert output_frame_count(16000 * 10, Fraction(30000, 1001)) == upstream_feature2chunks_count(160000, 30000 / 1001)


@pytest.mark.parametrize("samples, fps", [(0, 25), (16000, 0)])
def test_bad_inputs(samples, fps):
    with pytest.raises(InvalidInputError):
        output_frame_count(samples, fps)
