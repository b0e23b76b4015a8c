"""The frame schedule: upstream's ping-pong / trim rule as source indices."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentsync.errors import InvalidInputError
from latentsync.video.schedule import (
    frames_covering_audio,
    pingpong_index,
    plan_output_frames,
    split_monotonic_runs,
)


def upstream_loop(n_source: int, n_audio_frames: int) -> list[int]:
    """Oracle written the way upstream's loop_video reads: whole forward and
    reversed copies concatenated, then cut (or a plain cut when audio is shorter)."""
    frames = list(range(n_source))
    if n_audio_frames <= n_source:
        return frames[:n_audio_frames]
    passes = []
    for i in range(math.ceil(n_audio_frames / n_source)):
        passes += frames if i % 2 == 0 else frames[::-1]
    return passes[:n_audio_frames]


def test_trim_when_audio_is_shorter():
    # 2.5 s of audio against a 100-frame 25 fps clip: first 63 frames (62.5 -> 63 covers it).
    assert plan_output_frames(100, 25, 2.5) == list(range(63))
    assert plan_output_frames(100, 25, 2.52) == list(range(63))


def test_pingpong_when_audio_is_longer():
    schedule = plan_output_frames(4, 25, 11 / 25)
    assert schedule == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2]


def test_frame_count_on_exact_boundaries():
    assert frames_covering_audio(3.0, 25) == 75
    assert frames_covering_audio(48000 / 16000, 25) == 75
    assert frames_covering_audio(3.0001, 25) == 76
    assert frames_covering_audio(1.001, Fraction(30000, 1001)) == 30
    assert frames_covering_audio(0.001, 25) == 1


def test_single_frame_source_repeats():
    assert plan_output_frames(1, 25, 0.2) == [0] * 5


def test_explicit_output_count_overrides_duration():
    assert plan_output_frames(5, 25, n_output_frames=7) == [0, 1, 2, 3, 4, 4, 3]


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_source_frames=0, source_fps=25, audio_duration_s=1.0),
     dict(n_source_frames=5, source_fps=25, audio_duration_s=0.0),
     dict(n_source_frames=5, source_fps=0, audio_duration_s=1.0),
     dict(n_source_frames=5, source_fps=25)],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(InvalidInputError):
        plan_output_frames(**kwargs)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(1, 400))
def test_matches_upstream_loop_rule(n_source, n_out):
    assert plan_output_frames(n_source, 25, n_output_frames=n_out) == upstream_loop(n_source, n_out)
    assert [pingpong_index(k, n_source) for k in range(n_out)] == upstream_loop(n_source, n_out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=0, max_size=60))
def test_runs_cover_schedule_and_are_monotonic(schedule):
    covered = []
    previous_stop = 0
    for start, stop, forward in split_monotonic_runs(schedule):
        assert start == previous_stop and stop > start
        run = schedule[start:stop]
        steps = [b - a for a, b in zip(run, run[1:])]
        assert all(s >= 0 for s in steps) if forward else all(s <= 0 for s in steps)
        covered += run
        previous_stop = stop
    assert covered == schedule


def test_pingpong_runs_alternate():
    runs = list(split_monotonic_runs(plan_output_frames(4, 25, n_output_frames=11)))
    assert [r[2] for r in runs] == [True, False, True]
