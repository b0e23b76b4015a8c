"""Fixtures for the ComfyUI node tests: fake ComfyUI modules and real media (the astronaut clip)."""
from __future__ import annotations

import wave

import numpy as np
import pytest

from comfy_fakes import ASSETS, AUDIO_SAMPLES_16K, FPS, N_FRAMES, install_fake_comfy


@pytest.fixture
def comfy(monkeypatch, tmp_path):
    """Fake ComfyUI modules in sys.modules; `comfy.interrupted` is the Cancel button's state."""
    return install_fake_comfy(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def comfy_module(tmp_path_factory):
    """The same fakes, shared by a module's expensive pipeline runs."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield install_fake_comfy(monkeypatch, tmp_path_factory.mktemp("comfy"))


def _read_frames(count: int) -> np.ndarray:
    import av

    with av.open(str(ASSETS / "quickstart.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(count), container.decode(video=0))]
    return np.stack(frames)


@pytest.fixture(scope="session")
def images():
    """IMAGE: the astronaut's face (quickstart.mp4), torch float (N, H, W, 3) in 0..1."""
    import torch

    return torch.from_numpy(_read_frames(N_FRAMES)).float() / 255.0


@pytest.fixture(scope="session")
def audio():
    """AUDIO: the quickstart speech, cut so the node outputs N_FRAMES frames (upstream's length
    for it), {"waveform": (1, 1, S), "sample_rate"}."""
    import torch

    from latentsync.video.schedule import output_frame_count

    with wave.open(str(ASSETS / "quickstart_speech.wav")) as handle:
        rate, raw = handle.getframerate(), handle.readframes(handle.getnframes())
        assert handle.getsampwidth() == 2 and handle.getnchannels() == 1 and rate == 16000
    samples = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    samples = samples[:AUDIO_SAMPLES_16K]
    assert output_frame_count(len(samples), FPS) == N_FRAMES
    return {"waveform": torch.from_numpy(samples.copy())[None, None], "sample_rate": rate}
