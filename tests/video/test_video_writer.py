"""VideoWriter: rate and size kept, audio muxed and trimmed, atomic output, errors up front."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from latentsync.errors import InvalidInputError, MediaError, OutputError
from latentsync.video import (
    ScheduledFrameSource,
    VideoReader,
    VideoWriter,
    check_output_writable,
    plan_output_frames,
    probe_video,
    video_encoder_name,
)

from video_clips import decoded_audio_samples, index_frame, read_index, write_audio_file, write_index_clip

# One AAC frame at 16 kHz: the granularity of an audio track's length.
AAC_SLACK_S = 1024 / 16000


def _frames(n: int, height: int = 32, width: int = 80):
    for i in range(n):
        yield index_frame(i, width, height)


def _leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if "partial" in name or "write-test" in name)


def test_encoder_is_h264():
    assert video_encoder_name() == "libx264"  # the PyAV wheel bundles libx264; mpeg4 is the fallback


@pytest.mark.parametrize("fps", [25, 30, Fraction(30000, 1001), 29.97, "24000/1001"])
def test_rate_size_and_frames_preserved(tmp_path, fps):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=80, height=32, fps=fps) as writer:
        writer.write_frames(_frames(23))
    info = probe_video(out)
    expected = {25: Fraction(25), 30: Fraction(30), 29.97: Fraction(30000, 1001), "24000/1001": Fraction(24000, 1001)}.get(
        fps, fps
    )
    assert info.fps == expected
    assert (info.width, info.height, info.frame_count) == (80, 32, 23)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and not info.has_audio
    assert [read_index(f) for f in VideoReader(out)] == list(range(23))
    assert _leftovers(tmp_path) == []


def test_array_audio_is_muxed_and_trimmed_to_video(tmp_path):
    out = tmp_path / "out.mp4"
    audio = (0.1 * np.sin(np.arange(16000 * 3) / 16000 * 2 * np.pi * 200)).astype(np.float32)  # 3 s
    with VideoWriter(out, width=80, height=32, fps=25, audio=audio) as writer:
        writer.write_frames(_frames(50))  # 2 s of video
    info = probe_video(out)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_sample_rate == 16000
    assert info.audio_duration_s == pytest.approx(2.0, abs=AAC_SLACK_S)
    assert abs(decoded_audio_samples(out) - 32000) <= 1024


def test_short_audio_ends_early(tmp_path):
    out = tmp_path / "out.mp4"
    audio = np.zeros(8000, np.float32)  # 0.5 s
    with VideoWriter(out, width=80, height=32, fps=25, audio=audio) as writer:
        writer.write_frames(_frames(50))
    info = probe_video(out)
    assert info.frame_count == 50
    assert info.audio_duration_s == pytest.approx(0.5, abs=AAC_SLACK_S)


def test_audio_from_file_keeps_its_rate_and_channels(tmp_path):
    wav = write_audio_file(tmp_path / "voice.wav", 1.7, rate=44100, channels=2)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=80, height=32, fps=Fraction(30000, 1001), audio=wav) as writer:
        writer.write_frames(_frames(30))  # 1.001 s
    info = probe_video(out)
    assert info.audio_sample_rate == 44100 and info.audio_channels == 2
    assert info.audio_duration_s == pytest.approx(1.001, abs=1024 / 44100)


def test_audio_file_without_audio_stream(tmp_path, index_clip_gop8):
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaError, match="no audio stream"):
        VideoWriter(out, width=80, height=32, fps=25, audio=index_clip_gop8)
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_leaves_nothing(tmp_path, error):
    out = tmp_path / "out.mp4"
    with pytest.raises(error):
        with VideoWriter(out, width=80, height=32, fps=25, audio=np.zeros(16000, np.float32)) as writer:
            writer.write_frames(_frames(10))
            assert _leftovers(tmp_path)  # the temp file exists while writing...
            raise error("boom")
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # ...and is gone afterwards


def test_failure_keeps_previous_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(InvalidInputError, match="shape"):
        with VideoWriter(out, width=80, height=32, fps=25) as writer:
            writer.write_frames(_frames(3))
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert out.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == []


def test_no_frames_means_no_file(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="no frames"):
        with VideoWriter(out, width=80, height=32, fps=25):
            pass
    assert os.listdir(tmp_path) == []


def test_unwritable_folder_fails_before_work(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(OutputError) as err:
        check_output_writable(blocker / "out.mp4")
    assert "out.mp4" in str(err.value)
    with pytest.raises(OutputError):
        VideoWriter(blocker / "sub" / "out.mp4", width=80, height=32, fps=25)
    with pytest.raises(OutputError, match="folder"):
        check_output_writable(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output_writable(folder / "out.mp4")
    finally:
        folder.chmod(0o700)


def test_creates_missing_output_folder(tmp_path):
    out = check_output_writable(tmp_path / "a" / "b" / "out.mp4")
    assert out.parent.is_dir() and os.listdir(out.parent) == []


def test_refuses_to_overwrite_an_input(tmp_path, index_clip_gop8):
    before = index_clip_gop8.read_bytes()
    with pytest.raises(InvalidInputError, match="overwrite an input"):
        VideoWriter(index_clip_gop8, width=80, height=32, fps=25, inputs=[index_clip_gop8])
    link = tmp_path / "alias.mp4"
    link.symlink_to(index_clip_gop8)
    with pytest.raises(InvalidInputError, match="overwrite an input"):
        check_output_writable(link, inputs=[None, index_clip_gop8])
    wav = write_audio_file(tmp_path / "voice.wav", 0.3)
    with pytest.raises(InvalidInputError, match="overwrite an input"):
        VideoWriter(wav, width=80, height=32, fps=25, audio=wav)
    assert index_clip_gop8.read_bytes() == before


def test_odd_size_is_padded_to_even(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, width=81, height=33, fps=25) as writer:
        writer.write_frames(np.full((4, 33, 81, 3), 128, np.uint8))
    info = probe_video(out)
    assert (info.width, info.height) == (82, 34)


def test_end_to_end_pingpong_with_audio(tmp_path):
    """Source 30 frames at 30000/1001 + 2.0 s audio -> 60 output frames, ping-ponged, same rate, 2 s audio."""
    fps = Fraction(30000, 1001)
    src = write_index_clip(tmp_path / "src.mp4", 30, fps, gop=12)
    audio = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    info = probe_video(src)
    schedule = plan_output_frames(info.frame_count, info.fps, len(audio) / 16000)
    assert len(schedule) == 60  # ceil(2.0 * 29.97)
    out = tmp_path / "synced.mp4"
    with VideoWriter(out, width=info.width, height=info.height, fps=info.fps, audio=audio, inputs=[src]) as writer:
        for chunk in ScheduledFrameSource(src, schedule, chunk_size=16, max_buffer_frames=8):
            writer.write_frames(chunk.frames)
    result = probe_video(out)
    assert result.fps == fps and result.frame_count == 60
    assert result.audio_duration_s == pytest.approx(60 / float(fps), abs=AAC_SLACK_S)
    assert [read_index(f) for f in VideoReader(out)] == schedule
    assert sorted(os.listdir(tmp_path)) == ["src.mp4", "synced.mp4"]


def test_output_type_is_checked_up_front(tmp_path):
    with pytest.raises(OutputError, match="unsupported output type"):
        VideoWriter(tmp_path / "out.gif", width=80, height=32, fps=25)
    assert os.listdir(tmp_path) == []


def test_matroska_output_with_audio(tmp_path):
    out = tmp_path / "out.mkv"
    with VideoWriter(out, width=80, height=32, fps=Fraction(30000, 1001), audio=np.zeros(16000, np.float32)) as writer:
        writer.write_frames(_frames(12))
    info = probe_video(out)
    assert info.fps == Fraction(30000, 1001) and info.has_audio
    assert [read_index(f) for f in VideoReader(out)] == list(range(12))


def test_colours_survive_the_round_trip(tmp_path):
    """Encode RGB with one matrix, tag it, decode with the tag: saturated colours come back."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [240, 200, 40], [30, 120, 200]], np.uint8)
    image = np.repeat(np.repeat(colours[None], 64, axis=0), 16, axis=1)  # 5 bands of 16 px
    out = tmp_path / "colours.mp4"
    with VideoWriter(out, width=80, height=64, fps=25, crf=0) as writer:
        writer.write_frames([image] * 3)
    decoded = next(iter(VideoReader(out))).astype(int)
    centres = decoded[32, 8::16]
    assert np.abs(centres - colours.astype(int)).max() <= 6


def test_mpeg4_fallback_encoder(tmp_path):
    """The path taken when a PyAV build lacks libx264."""
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=80, height=32, fps=Fraction(30000, 1001), codec="mpeg4") as writer:
        writer.write_frames(_frames(9))
    info = probe_video(out)
    assert info.codec == "mpeg4" and info.fps == Fraction(30000, 1001) and info.frame_count == 9
    assert [read_index(f) for f in VideoReader(out)] == list(range(9))
