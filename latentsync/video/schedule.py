"""Which source frame goes into each output frame, and how many output frames there are.

Output length. Upstream LatentSync makes one video frame per Whisper audio window:
`feature2chunks` appends frame i and only then stops once its first feature step
int(i * 50 / fps) lies past the last step, so a clip of `steps` features (50 per
second, `samples // 320` at 16 kHz) gives ceil((steps + 1) * fps / 50) + 1 frames
(`steps // 2 + 2` at 25 fps; `audio.features.audio_frame_count`). That is up to two
frames more than the ceil(duration x fps) frames the audio covers (e.g. 3.0 s at 25 fps:
77 frames, 3.08 s, for 75 covered); the last frames take the last audio window, and the
muxed audio keeps its own length (upstream cuts it to the video, which is longer). The
pipeline uses `output_frame_count` (upstream's rule) and reports `frames_covering_audio`.

Schedule. When the output needs more frames than the video has, upstream
(lipsync_pipeline.loop_video) concatenates the clip forward, reversed, forward, ...
(each pass is the whole clip, so the turning frames repeat: ..., N-2, N-1, N-1, N-2,
..., 1, 0, 0, 1, ...) and cuts the result at the output's frame count; when it needs
fewer, the video is cut. This module computes that schedule as plain source indices so
the reader can stream it instead of concatenating arrays.

Pure Python, no PyAV: cheap to import and to property-test.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterator, Sequence

from ..errors import InvalidInputError

# Durations measured in float seconds (samples / rate) land a hair above an
# exact frame boundary (3.0 s * 25 fps = 75.00000000000001). Anything closer
# to the boundary than this many frames counts as on it.
_FRAME_BOUNDARY_TOLERANCE = 1e-6


def frames_covering_audio(audio_duration_s: float, fps: float | Fraction) -> int:
    """Number of frames at `fps` needed to cover `audio_duration_s` seconds: ceil(duration x fps).

    The last frame may extend past the audio by less than one frame period. Upstream's
    output has up to two frames more (`output_frame_count`).
    """
    if not audio_duration_s or audio_duration_s <= 0:
        raise InvalidInputError(f"audio duration must be positive, got {audio_duration_s!r}")
    fps_f = float(fps)
    if fps_f <= 0:
        raise InvalidInputError(f"frame rate must be positive, got {fps!r}")
    exact = float(audio_duration_s) * fps_f
    return max(1, math.ceil(exact - _FRAME_BOUNDARY_TOLERANCE))


def output_frame_count(n_audio_samples: int, fps: float | Fraction) -> int:
    """Upstream's output length for `n_audio_samples` of 16 kHz audio at `fps`: one frame per
    audio window `feature2chunks` makes, ceil((steps + 1) * fps / 50) + 1 with
    steps = samples // 320 (the Whisper feature count)."""
    from ..audio.features import audio_frame_count, feature_steps_for_samples

    if n_audio_samples <= 0:
        raise InvalidInputError(f"the audio has no samples (n_audio_samples={n_audio_samples})")
    if float(fps) <= 0:
        raise InvalidInputError(f"frame rate must be positive, got {fps!r}")
    return audio_frame_count(feature_steps_for_samples(int(n_audio_samples)), fps)


OUTPUT_FRAMES_RULE = ("upstream: one frame per Whisper audio window, ceil((steps + 1) * fps / 50) + 1 "
                      "for steps = samples_16k // 320 (steps // 2 + 2 at 25 fps)")


def pingpong_index(output_index: int, n_source_frames: int) -> int:
    """Source frame for output position `output_index` under upstream's loop rule.

    Even passes play 0..N-1, odd passes play N-1..0 (whole reversed copies, so
    the turning frame appears twice in a row).
    """
    if n_source_frames <= 0:
        raise InvalidInputError(f"the video has no frames (n_source_frames={n_source_frames})")
    position = output_index % (2 * n_source_frames)
    return position if position < n_source_frames else 2 * n_source_frames - 1 - position


def plan_output_frames(
    n_source_frames: int,
    source_fps: float | Fraction,
    audio_duration_s: float | None = None,
    *,
    n_output_frames: int | None = None,
) -> list[int]:
    """Source frame index for every output frame, as upstream matches video to audio.

    The output has `n_output_frames` frames (the pipeline passes upstream's
    `output_frame_count`), or `frames_covering_audio(audio_duration_s, source_fps)`
    when only the duration is given. Fewer output frames than the video has trim
    the clip; more ping-pong it (forward, backward, forward, ...).
    """
    if n_source_frames <= 0:
        raise InvalidInputError(f"the video has no frames (n_source_frames={n_source_frames})")
    if n_output_frames is None:
        if audio_duration_s is None:
            raise InvalidInputError("plan_output_frames needs audio_duration_s or n_output_frames")
        n_output_frames = frames_covering_audio(audio_duration_s, source_fps)
    if n_output_frames <= 0:
        raise InvalidInputError(f"n_output_frames must be positive, got {n_output_frames}")
    return [pingpong_index(k, n_source_frames) for k in range(n_output_frames)]


def split_monotonic_runs(schedule: Sequence[int]) -> Iterator[tuple[int, int, bool]]:
    """Cut a schedule into maximal runs the reader can serve cheaply.

    Yields `(start, stop, forward)` as positions into `schedule` (stop
    exclusive). A forward run never decreases (decode sequentially, skipping
    gaps); a backward run never increases (decode windows, emit reversed).
    Repeats belong to whichever run they extend.
    """
    n = len(schedule)
    start = 0
    while start < n:
        stop = start + 1
        # Direction is set by the first step that moves; flat steps join either.
        direction = 0
        while stop < n:
            step = schedule[stop] - schedule[stop - 1]
            if step == 0 or direction == 0 or (step > 0) == (direction > 0):
                if direction == 0 and step != 0:
                    direction = step
                stop += 1
            else:
                break
        yield start, stop, direction >= 0
        start = stop
