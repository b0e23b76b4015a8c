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
    seconds = 0.6  # covers 15 frames at 25 fps; upstream's length: 9600 // 320 // 2 + 2 = 17 frames
    audio = np.random.default_rng(0).standard_normal(int(44100 * seconds)).astype(np.float32) * 0.1
    result = api.lipsync_arrays(frames, fps=25, audio=audio, sample_rate=44100, weights="random-small",
                                overrides={"steps": 1})
    assert result.frames.shape == (17,) + frames.shape[1:]  # the 20-frame clip is trimmed to the audio's length
    assert result.stats["audio_covered_frames"] == 15
    assert len(result.audio_16k) == 9600  # all of the audio (it ends before the last frames)
    # one step, one chunk per batch: a chunk of 16 frames, then the last frame's chunk at its own length
    assert result.settings_applied["steps"] == 1 and result.stats["unet_calls"] == 2
    assert result.stats["unet_sample_shape"][2] == 16
    assert result.plan.sources["steps"].override
    # the job report run_job would write, from the same run (run_clip)
    from latentsync.engine import schema_errors

    assert schema_errors(result.report, "job_report") == []
    assert result.report["timings"] == result.timings and "load_models" in result.timings
    assert result.report["settings_applied"] == result.settings_applied


def test_lipsync_arrays_steps_down_on_out_of_memory_without_keeping_partial_frames(monkeypatch):
    from latentsync.testing.pipeline_helpers import CPU_SMALL, default_settings

    frames = quickstart_frames(4)
    attempts = []

    def fake_build_pipeline(weights, settings):
        def pipeline(source, sink, **kw):
            attempts.append(settings.frames_per_batch)
            media = source.open()
            with sink.open(media) as writer:
                writer.write_frames(np.zeros((2,) + frames.shape[1:], np.uint8))  # a partial chunk
                if len(attempts) == 1:
                    raise torch.OutOfMemoryError("simulated")
                writer.write_frames(np.zeros((2,) + frames.shape[1:], np.uint8))
            return runner.PipelineResult(frames_total=4, video_seconds=0.16, timings={}, frames_without_face=[],
                                         peak_vram_gib=None, device="cpu")

        return pipeline

    class Plan:
        settings = default_settings(**CPU_SMALL, frames_per_batch=32)
        fallbacks = [{"rule": "mem.oom-1", "set": {"frames_per_batch": 16}}]
        rules_version, rules_hash, notes = "v1", "x" * 64, []

        def to_dict(self):
            return {}

    monkeypatch.setattr(runner, "build_pipeline", fake_build_pipeline)
    result = api.lipsync_arrays(frames, fps=25, audio=np.zeros(2560, np.float32) + 0.1, sample_rate=16000,
                                plan=Plan())
    assert attempts == [32, 16]
    assert len(result.frames) == 4  # the failed attempt's frames are gone
    assert result.fallbacks_applied == Plan.fallbacks and any("out of memory" in w for w in result.warnings)
    assert result.settings_applied["frames_per_batch"] == 16
    # the job report (as run_job writes it) says the same
    assert result.report["fallbacks_applied"] == Plan.fallbacks
    assert result.report["settings_applied"] == result.settings_applied
    assert result.report["status"] == "ok" and result.report["warnings"] == result.warnings


def test_bad_arrays_are_clear_errors():
    with pytest.raises(InvalidInputError, match="frames must be"):
        api.lipsync_arrays(np.zeros((4, 8, 8)), fps=25, audio=np.ones(160), sample_rate=16000)
    with pytest.raises(InvalidInputError, match="fps"):
        api.lipsync_arrays(np.zeros((4, 8, 8, 3), np.uint8), fps=0, audio=np.ones(160), sample_rate=16000)
    with pytest.raises(MediaError, match="no samples"):
        api.lipsync_arrays(np.zeros((4, 8, 8, 3), np.uint8), fps=25, audio=np.zeros(0), sample_rate=16000)
