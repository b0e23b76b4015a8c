"""Shared helpers for the audio tests: the reference fixture folder and small encoders."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from latentsync.paths import reference_dir


@pytest.fixture(scope="session")
def audio_reference() -> Path:
    """`../shared/reference/audio_parity`, or skip when the reference data is absent."""
    root = reference_dir()
    if root is None or not (root / "audio_parity").is_dir():
        pytest.skip("reference data (../shared/reference/audio_parity) not present")
    return root / "audio_parity"


@pytest.fixture(scope="session")
def reference_waveform(audio_reference: Path) -> np.ndarray:
    """The fixture's 37 s WAV decoded as int16 / 32768 with the stdlib, independently of the code under test."""
    with wave.open(str(audio_reference / "speechlike_37s_16k.wav")) as handle:
        assert handle.getsampwidth() == 2 and handle.getnchannels() == 1
        frames = handle.readframes(handle.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0
