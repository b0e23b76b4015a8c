"""The bundled quickstart clip and speech: present, small, as specified, reproducible."""
from __future__ import annotations

import importlib.util
import wave
from fractions import Fraction

import numpy as np
import pytest

from latentsync.paths import examples_dir
from latentsync.video import VideoReader, plan_output_frames, probe_video

ASSETS = examples_dir() / "assets"
VIDEO = ASSETS / "quickstart.mp4"
SPEECH = ASSETS / "quickstart_speech.wav"


def _read_wav(path):
    with wave.open(str(path), "rb") as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, 16000)
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2")


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_quickstart_assets", examples_dir() / "make_quickstart_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_assets_are_small_and_as_specified():
    assert VIDEO.stat().st_size + SPEECH.stat().st_size < 1_000_000
    info = probe_video(VIDEO)
    assert (info.width, info.height, info.fps, info.frame_count) == (256, 256, Fraction(25), 75)
    assert info.codec == "h264" and not info.has_audio
    speech = _read_wav(SPEECH)
    assert len(speech) == 48000  # 3.0 s: as long as the clip, so the output keeps its 75 frames
    assert plan_output_frames(info.frame_count, info.fps, len(speech) / 16000) == list(range(75))


def test_speech_has_syllables_and_pauses():
    speech = _read_wav(SPEECH).astype(np.float64) / 32768
    rms = np.sqrt((speech.reshape(-1, 400) ** 2).mean(axis=1))  # 25 ms frames
    assert (rms < 0.01).sum() >= 8  # pauses
    loud = rms > 0.05
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1])
    assert 6 <= len(onsets) + loud[0] <= 16  # roughly 4 syllables a second over 3 s


def test_clip_moves():
    frames = [f.astype(np.int16) for f in VideoReader(VIDEO)]
    assert np.abs(frames[0] - frames[37]).mean() > 5  # animated, not a still
    assert np.abs(frames[0] - frames[1]).mean() < 15  # gently


def test_generator_reproduces_the_assets(tmp_path):
    module = _load_generator()
    video, speech = module.make_assets(tmp_path)
    assert np.abs(_read_wav(speech).astype(int) - _read_wav(SPEECH).astype(int)).max() <= 1
    fresh = np.stack(list(VideoReader(video))).astype(np.int16)
    bundled = np.stack(list(VideoReader(VIDEO))).astype(np.int16)
    assert fresh.shape == bundled.shape
    assert np.abs(fresh - bundled).mean() < 2.0  # same picture; encoder versions may differ bit-wise
