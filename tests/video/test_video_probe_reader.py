"""probe_video, VideoReader and ScheduledFrameSource on clips that carry their frame index."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from latentsync.errors import InvalidInputError, MediaError
from latentsync.video import ScheduledFrameSource, VideoReader, plan_output_frames, probe_video

from video_clips import av, read_index, write_audio_file, write_index_clip


# -- probe -------------------------------------------------------------------
@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30), Fraction(30000, 1001)])
def test_probe_reports_exact_rate_size_and_count(tmp_path, fps):
    path = write_index_clip(tmp_path / "clip.mp4", 17, fps, audio_seconds=0.5)
    info = probe_video(path)
    assert info.fps == fps
    assert info.fps_float == pytest.approx(float(fps))
    assert (info.width, info.height) == (80, 32)
    assert info.frame_count == 17 and info.frame_count_exact
    assert info.duration_s == pytest.approx(17 / float(fps), abs=1e-3)
    assert info.codec == "h264" and info.rotation == 0
    assert info.has_audio and info.audio_sample_rate == 16000 and info.audio_channels == 1
    assert info.audio_duration_s == pytest.approx(0.5, abs=0.07)
    assert info.to_dict()["fps"] == f"{fps.numerator}/{fps.denominator}"


def test_probe_without_audio(index_clip_gop8):
    info = probe_video(index_clip_gop8)
    assert not info.has_audio and info.audio_duration_s is None


def test_probe_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found") as err:
        probe_video(tmp_path / "nope.mp4")
    assert err.value.path.endswith("nope.mp4")


def test_probe_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty") as err:
        probe_video(tmp_path / "empty.mp4")
    assert "empty.mp4" in str(err.value)


def test_probe_random_bytes(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    before = path.read_bytes()
    with pytest.raises(MediaError) as err:
        probe_video(path)
    assert "corrupt.mp4" in str(err.value)
    assert path.read_bytes() == before  # inputs are never modified


def test_probe_folder(tmp_path):
    with pytest.raises(MediaError, match="folder"):
        probe_video(tmp_path)


def test_probe_audio_only_file(tmp_path):
    path = write_audio_file(tmp_path / "speech.wav", 0.5)
    with pytest.raises(MediaError, match="no video stream"):
        probe_video(path)


def test_probe_video_track_without_frames(tmp_path):
    """An mp4 whose header promises frames but whose sample data is gone (truncated after moov)."""
    full = write_index_clip(tmp_path / "full.mp4", 20, 25, faststart=True)
    data = full.read_bytes()
    mdat = data.index(b"mdat")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: mdat + 4])
    with pytest.raises(MediaError, match="no frames|cannot be decoded") as err:
        probe_video(truncated)
    assert "truncated.mp4" in str(err.value)


def test_probe_container_with_empty_video_track(tmp_path):
    path = tmp_path / "noframes.mp4"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(MediaError, match="no video stream|no frames"):
        probe_video(path)


def test_probe_rotation_and_reader_autorotate(tmp_path):
    path = tmp_path / "rotated.mp4"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
    stream.set_display_rotation(-90)  # clockwise, as phones record portrait
    for i in range(3):
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :16] = 255  # white band on the left of the coded picture
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 25)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    info = probe_video(path)
    assert info.rotation == 270 and info.display_size == (32, 64)
    upright = next(iter(VideoReader(path)))
    assert upright.shape == (64, 32, 3)
    assert upright[:12].mean() > 200 and upright[-40:].mean() < 30  # the band is on top once turned clockwise
    coded = next(iter(VideoReader(path, autorotate=False)))
    assert coded.shape == (32, 64, 3)


# -- sequential reader -----------------------------------------------------------
def test_reader_chunks_are_in_order_and_bounded(index_clip_gop8):
    reader = VideoReader(index_clip_gop8)
    chunks = list(reader.chunks(16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert [c.start for c in chunks] == [0, 16, 32]
    for chunk in chunks:
        assert chunk.frames.dtype == np.uint8 and chunk.frames.shape[1:] == (32, 80, 3)
        assert [read_index(f) for f in chunk.frames] == chunk.source_indices
    assert [i for c in chunks for i in c.source_indices] == list(range(40))
    assert [read_index(f) for f in reader] == list(range(40))


def test_reader_is_lazy(index_clip_gop8):
    """Taking one chunk decodes about one chunk, not the clip."""
    reader = VideoReader(index_clip_gop8)
    iterator = reader.chunks(4)
    first = next(iterator)
    assert first.source_indices == [0, 1, 2, 3]
    assert reader._cursor.decoded <= 8
    reader.close()


# -- scheduled source --------------------------------------------------------------
def _emitted(source: ScheduledFrameSource) -> tuple[list[int], list[int]]:
    decoded, claimed = [], []
    for chunk in source:
        assert len(chunk) <= source.chunk_size
        decoded += [read_index(f) for f in chunk.frames]
        claimed += chunk.source_indices
    return decoded, claimed


@pytest.mark.parametrize("clip", ["index_clip_gop8", "index_clip_longgop"])
@pytest.mark.parametrize("max_buffer", [5, 16, 64])
def test_pingpong_emits_right_frames(request, clip, max_buffer):
    path = request.getfixturevalue(clip)
    n_source = probe_video(path).frame_count
    schedule = plan_output_frames(n_source, 25, n_output_frames=int(n_source * 2.6))
    source = ScheduledFrameSource(path, schedule, chunk_size=16, max_buffer_frames=max_buffer)
    decoded, claimed = _emitted(source)
    assert claimed == schedule
    assert decoded == schedule
    assert source.peak_buffered_frames <= max_buffer
    assert source.seeks >= 1  # the backward pass really seeks instead of holding the clip


def test_keyframe_aligned_windows_do_not_redecode(index_clip_gop8):
    """GOP 8 and windows of 16: every frame of the backward pass is decoded once."""
    schedule = plan_output_frames(40, 25, n_output_frames=80)  # forward, then backward
    source = ScheduledFrameSource(index_clip_gop8, schedule, chunk_size=16, max_buffer_frames=16)
    decoded, _ = _emitted(source)
    assert decoded == schedule
    assert source.decoded_frames <= 80 + 8  # one pass each way; a GOP of slack for seek landings


def test_trimmed_schedule_stops_early(index_clip_longgop):
    schedule = plan_output_frames(50, 25, 0.8)
    source = ScheduledFrameSource(index_clip_longgop, schedule, chunk_size=8)
    decoded, _ = _emitted(source)
    assert decoded == list(range(20))
    assert source.decoded_frames <= 20 + 8  # decoder look-ahead, not the whole clip


def test_gappy_forward_schedule(index_clip_gop8):
    """A rate-change schedule (every 6th frame skipped, 30 -> 25 fps style) and a jump back."""
    schedule = [i for i in range(40) if i % 6 != 5] + [3, 4, 30, 31, 0]
    decoded, _ = _emitted(ScheduledFrameSource(index_clip_gop8, schedule, chunk_size=7))
    assert decoded == schedule


def test_schedule_beyond_clip_is_rejected(index_clip_gop8):
    with pytest.raises(InvalidInputError, match="40 frames"):
        ScheduledFrameSource(index_clip_gop8, [0, 1, 40], chunk_size=4)
    with pytest.raises(InvalidInputError):
        ScheduledFrameSource(index_clip_gop8, [0, -1], chunk_size=4)
    with pytest.raises(InvalidInputError):
        ScheduledFrameSource(index_clip_gop8, [0], chunk_size=0)


def test_no_temp_files_left_by_reading(index_clip_gop8):
    folder = index_clip_gop8.parent
    before = sorted(os.listdir(folder))
    list(ScheduledFrameSource(index_clip_gop8, plan_output_frames(40, 25, 3.0), chunk_size=16))
    assert sorted(os.listdir(folder)) == before


def test_matroska_count_is_estimated_then_counted(tmp_path):
    """Matroska stores no frame count: probe estimates (and says so), count_frames demuxes."""
    from latentsync.video import count_frames

    path = write_index_clip(tmp_path / "clip.mkv", 33, 25, gop=10)
    info = probe_video(path)
    assert not info.frame_count_exact
    assert abs(info.frame_count - 33) <= 1
    assert count_frames(path) == 33
    schedule = plan_output_frames(33, info.fps, n_output_frames=70)
    decoded = [read_index(f) for chunk in ScheduledFrameSource(path, schedule, chunk_size=16, max_buffer_frames=6)
               for f in chunk.frames]
    assert decoded == schedule


def test_schedule_past_the_real_end_is_a_media_error(tmp_path):
    path = write_index_clip(tmp_path / "clip.mkv", 12, 25)
    source = ScheduledFrameSource(path, list(range(20)), chunk_size=8)
    with pytest.raises(MediaError, match="ended before frame 12"):
        list(source)


def test_default_backward_buffer_is_bounded_in_bytes():
    from latentsync.video.reader import default_max_buffer_frames

    assert default_max_buffer_frames(256, 256) == 64
    assert default_max_buffer_frames(1920, 1080) * 1920 * 1080 * 3 <= 256 * 1024 * 1024
    assert default_max_buffer_frames(7680, 4320) >= 4
