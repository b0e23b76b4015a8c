"""The in-memory API (ComfyUI's path): audio resampling, plans, the OOM ladder."""
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from latentsync import api, runner
from latentsync.errors import InvalidInputError, MediaError

ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"


def quickstart_frames(n=20):
    with av.open(str(ASSETS / "quickstart.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0))]
    return np.stack(frames)


@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_resample_keeps_a_sine_frequency_and_duration(rate):
    t = np.arange(int(rate * 0.5)) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    out = api.resample_audio(stereo, rate)
    assert abs(len(out) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 4


def test_lipsync_arrays_runs_the_rules_plan_and_trims_audio():
    frames = quickstart_frames(20)
    seconds = 0.6  # 15 frames at 25 fps: the clip is trimmed to the audio
    audio = np.random.default_rng(0).standard_normal(int(44100 * seconds)).astype(np.float32) * 0.1
    result = api.lipsync_arrays(frames, fps=25, audio=audio, sample_rate=44100, weights="random-small",
                                overrides={"steps": 1})
    assert result.frames.shape == (15,) + frames.shape[1:]
    assert len(result.audio_16k) == 9600
    assert result.settings_applied["steps"] == 1 and result.stats["unet_calls"] == 1  # one chunk, one step
    assert result.plan.sources["steps"].override


def test_lipsync_arrays_steps_down_on_out_of_memory_without_keeping_partial_frames(monkeypatch):
    frames = quickstart_frames(4)
    attempts = []

    def fake_run_pipeline(spec, settings, clip=None, **kw):
        attempts.append(settings["frames_per_batch"])
        clip.output_frames.append(np.zeros((2,) + frames.shape[1:], np.uint8))  # a partial chunk
        if len(attempts) == 1:
            raise torch.OutOfMemoryError("simulated")
        clip.output_frames.append(np.zeros((2,) + frames.shape[1:], np.uint8))
        return runner.PipelineResult(frames_total=4, video_seconds=0.16, timings={}, frames_without_face=[],
                                     peak_vram_gib=None, device="cpu")

    class Plan:
        settings = {"frames_per_batch": 32}
        fallbacks = [{"rule": "mem.oom-1", "set": {"frames_per_batch": 16}}]

    monkeypatch.setattr(runner, "run_pipeline", fake_run_pipeline)
    result = api.lipsync_arrays(frames, fps=25, audio=np.zeros(2560, np.float32) + 0.1, sample_rate=16000,
                                plan=Plan())
    assert attempts == [32, 16]
    assert len(result.frames) == 4  # the failed attempt's frames are gone
    assert result.fallbacks_applied == Plan.fallbacks and any("out of memory" in w for w in result.warnings)


def test_bad_arrays_are_clear_errors():
    with pytest.raises(InvalidInputError, match="frames must be"):
        api.lipsync_arrays(np.zeros((4, 8, 8)), fps=25, audio=np.ones(160), sample_rate=16000)
    with pytest.raises(InvalidInputError, match="fps"):
        api.lipsync_arrays(np.zeros((4, 8, 8, 3), np.uint8), fps=0, audio=np.ones(160), sample_rate=16000)
    with pytest.raises(MediaError, match="no samples"):
        api.lipsync_arrays(np.zeros((4, 8, 8, 3), np.uint8), fps=25, audio=np.zeros(0), sample_rate=16000)
