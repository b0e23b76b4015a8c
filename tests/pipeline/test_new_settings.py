"""The run-plan settings added with RunSettings change what a run does (CPU proofs):
`encoder_crf` and `encoder_preset` (the output video), `prefetch_memory_mib` (decoded
frames held ahead of the model), `tf32` and `cudnn_benchmark` (torch's global flags,
set for a run and restored after it, like inductor's cache folder). The CUDA cases use
`torch.device("cuda")` as a name only: nothing here touches a GPU."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from latentsync.pipeline import levers
from latentsync.pipeline import lipsync as lipsync_module
from latentsync.pipeline.clips import ArrayFrameSink, ClipMedia, VideoFileSink
from latentsync.testing.pipeline_helpers import CPU_SMALL, default_settings, quickstart_assets, short_speech

needs_x264 = pytest.mark.skipif("libx264" not in __import__("av").codecs_available,
                                reason="PyAV's FFmpeg has no libx264 (crf and preset are x264 options)")


def x264_options(path: Path) -> dict[str, str]:
    """The encoder settings x264 writes into the stream it made (its SEI: `options: key=value ...`)."""
    data = Path(path).read_bytes()
    start = data.find(b"x264 - core")
    assert start >= 0, f"{path} holds no x264 stream"
    text = data[start:data.index(b"\x00", start)].decode("ascii", "replace")
    return dict(item.split("=", 1) for item in text.split("options:", 1)[1].split() if "=" in item)


def noisy_frames(count=16, size=128):
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def write_through_sink(path: Path, frames: np.ndarray, crf: int, preset: str) -> Path:
    media = ClipMedia(fps=25.0, frame_count=len(frames), width=frames.shape[2], height=frames.shape[1],
                      waveform=np.zeros(16000, np.float32))
    with VideoFileSink(path, crf=crf, preset=preset).open(media) as writer:
        writer.write_frames(frames)
    return path


# ---------------------------------------------------------------- encoder_crf, encoder_preset


@needs_x264
def test_encoder_crf_sets_the_output_quality_and_size(tmp_path):
    frames = noisy_frames()
    lossless = write_through_sink(tmp_path / "crf0.mp4", frames, crf=0, preset="medium")
    smallest = write_through_sink(tmp_path / "crf51.mp4", frames, crf=51, preset="medium")
    assert lossless.stat().st_size > 20 * smallest.stat().st_size
    assert x264_options(lossless)["qp"] == "0"  # crf 0: x264's lossless constant-QP mode
    assert x264_options(smallest)["crf"] == "51.0"


@needs_x264
def test_encoder_preset_reaches_x264(tmp_path):
    frames = noisy_frames()
    fast = x264_options(write_through_sink(tmp_path / "ultrafast.mp4", frames, crf=18, preset="ultrafast"))
    slow = x264_options(write_through_sink(tmp_path / "veryslow.mp4", frames, crf=18, preset="veryslow"))
    # x264's presets: ultrafast searches nothing (subme 0, diamond ME, no CABAC); veryslow the most
    assert (fast["subme"], fast["me"], fast["cabac"]) == ("0", "dia", "0")
    assert (slow["subme"], slow["me"], slow["cabac"]) == ("10", "umh", "1")
    assert fast["crf"] == slow["crf"] == "18.0"


@pytest.fixture
def recorded_writers(monkeypatch):
    """Every VideoWriter a sink opens: its keyword arguments."""
    import latentsync.video as video

    seen: list[dict] = []
    real = video.VideoWriter

    class RecordingWriter(real):
        def __init__(self, *args, **kwargs):
            seen.append(dict(kwargs))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(video, "VideoWriter", RecordingWriter)
    return seen


@needs_x264
def test_the_run_path_encodes_with_the_plans_crf_and_preset(tmp_path, recorded_writers):
    """run_job -> plan -> run_clip -> VideoFileSink: the plan's encoder settings make the file."""
    from latentsync.jobs import JobSpec
    from latentsync.runner import run_job

    video, _ = quickstart_assets()
    speech = short_speech(tmp_path / "speech.wav", 0.64)
    outputs = {}
    for crf, preset in ((0, "ultrafast"), (51, "veryslow")):
        spec = JobSpec(video=video, audio=speech, output=tmp_path / f"crf{crf}.mp4", weights="random-small",
                       overrides={"steps": 1, "encoder_crf": crf, "encoder_preset": preset})
        report = run_job(spec)
        assert (report.settings_applied["encoder_crf"], report.settings_applied["encoder_preset"]) == (crf, preset)
        outputs[crf] = (spec.output, x264_options(spec.output))
    assert [(w["crf"], w["preset"]) for w in recorded_writers] == [(0, "ultrafast"), (51, "veryslow")]
    (lossless, fast), (smallest, slow) = outputs[0], outputs[51]
    assert lossless.stat().st_size > 5 * smallest.stat().st_size
    assert fast["qp"] == "0" and fast["subme"] == "0" and fast["me"] == "dia"
    assert slow["crf"] == "51.0" and slow["subme"] == "10" and slow["me"] == "umh"


# ---------------------------------------------------------------- prefetch_memory_mib


def test_prefetch_depth_follows_the_memory_budget():
    chunk_mib = 16 * 256 * 256 * 3 / 2**20  # one 16-frame chunk of 256 x 256 frames: 3 MiB
    assert chunk_mib == 3
    depth = lipsync_module.prefetch_depth
    assert depth(4, 16, 256, 256, 1024 << 20) == 8  # two batches of 4 chunks fit
    assert depth(4, 16, 256, 256, 16 << 20) == 5  # 16 MiB: five 3 MiB chunks
    assert depth(4, 16, 256, 256, 6 << 20) == 2  # never fewer than two chunks


@pytest.mark.parametrize("mib, expected_depth", [(1024, 8), (16, 5)])
def test_prefetch_memory_mib_sets_how_far_the_pipeline_reads_ahead(monkeypatch, mib, expected_depth):
    from latentsync.bench.core import bench_clip
    from latentsync.runner import build_pipeline

    depths, budgets = [], []
    real_prefetch, real_depth = lipsync_module.prefetch, lipsync_module.prefetch_depth

    def recording_prefetch(items, depth, name=None):
        depths.append(depth)
        return real_prefetch(items, depth=depth, name=name)

    def recording_depth(*args):
        budgets.append(args[-1])
        return real_depth(*args)

    monkeypatch.setattr(lipsync_module, "prefetch", recording_prefetch)
    monkeypatch.setattr(lipsync_module, "prefetch_depth", recording_depth)
    settings = default_settings(**CPU_SMALL, steps=1, cfg_mode="off", frames_per_batch=64, chunk_frames=16,
                                prefetch_memory_mib=mib)
    pipeline = build_pipeline("random-small", settings)
    sink = ArrayFrameSink()
    result = pipeline(bench_clip(16, width=256, height=256, resolution=128), sink)
    assert budgets == [mib << 20]
    assert depths == [expected_depth]
    assert result.frames_total == len(sink.frames()) > 0


# ---------------------------------------------------------------- tf32, cudnn_benchmark


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


@pytest.fixture
def restore_flags():
    saved = _flags()
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = saved


@pytest.mark.parametrize("tf32, benchmark", [(True, True), (False, False), (True, False), (False, True)])
def test_tf32_and_cudnn_benchmark_are_set_for_a_cuda_run_and_restored(restore_flags, tf32, benchmark):
    before = (not tf32, not tf32, not benchmark)  # the process's own values: the opposite
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = before
    settings = default_settings(tf32=tf32, cudnn_benchmark=benchmark)
    # torch.device("cuda") is only a name: nothing touches a GPU here
    with levers.run_scope(settings, torch.device("cuda")):
        assert _flags() == (tf32, tf32, benchmark)
    assert _flags() == before


def test_the_flags_are_restored_when_a_run_fails(restore_flags):
    before = (False, False, False)
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = before
    with pytest.raises(RuntimeError, match="boom"):
        with levers.run_scope(default_settings(tf32=True, cudnn_benchmark=True), torch.device("cuda")):
            assert _flags() == (True, True, True)
            raise RuntimeError("boom")
    assert _flags() == before


def test_a_cpu_run_sets_and_restores_the_same_flags(restore_flags):
    """The flags only matter on CUDA, but a run sets them on every device (one code path)."""
    before = (False, True, False)
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = before
    with levers.run_scope(default_settings(tf32=True, cudnn_benchmark=True), torch.device("cpu")):
        assert _flags() == (True, True, True)
    assert _flags() == before


@pytest.mark.parametrize("user_folder", [False, True])
def test_a_compiled_run_scope_restores_torch_flags_and_the_cache_folders(restore_flags, monkeypatch, tmp_path,
                                                                        user_folder):
    from latentsync.pipeline.compile_cache import CompileCache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    if user_folder:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    else:
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    before_env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    cache = CompileCache.for_device("cpu")
    before = (False, False, False)
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = before
    compiled = default_settings(compile="default", cuda_graphs=True, tf32=True, cudnn_benchmark=True)
    with pytest.raises(KeyError):  # also when the run fails
        with levers.run_scope(compiled, torch.device("cuda"), cache):
            assert _flags() == (True, True, True)
            expected = tmp_path / "mine" if user_folder else cache.inductor_dir
            assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(expected)
            assert os.environ["TRITON_CACHE_DIR"] == str(cache.triton_dir)
            assert str(cache.folder).startswith(str(tmp_path / "xdg" / "latentsync-runner" / "compile"))
            assert user_folder or expected.is_dir()
            raise KeyError("stop")
    assert _flags() == before
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == before_env
    assert "TRITON_CACHE_DIR" not in os.environ


@pytest.mark.parametrize("tf32, benchmark", [(False, False), (True, True)])
def test_the_pipeline_runs_its_stages_inside_the_run_scope(monkeypatch, restore_flags, tf32, benchmark):
    """`LipSyncPipeline.__call__` enters `run_scope` with its own settings and device around
    every stage: while the model runs, torch's flags are the plan's; after the run, the
    process's own again."""
    from latentsync.bench.core import bench_clip
    from latentsync.runner import build_pipeline

    before = (not tf32, not tf32, not benchmark)
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = before
    scopes, inside = [], {"now": False, "during_model": [], "flags": []}
    real_scope = lipsync_module.run_scope

    class RecordingScope:
        def __init__(self, settings, device, cache=None):
            scopes.append((settings, device))
            self.inner = real_scope(settings, device, cache)

        def __enter__(self):
            self.inner.__enter__()
            inside["now"] = True

        def __exit__(self, *exc):
            inside["now"] = False
            return self.inner.__exit__(*exc)

    def watch(run):
        def watched(*args, **kwargs):
            inside["during_model"].append(inside["now"])
            inside["flags"].append(_flags())
            return run(*args, **kwargs)

        return watched

    monkeypatch.setattr(lipsync_module, "run_scope", RecordingScope)
    settings = default_settings(**CPU_SMALL, steps=1, cfg_mode="off", tf32=tf32, cudnn_benchmark=benchmark)
    pipeline = build_pipeline("random-small", settings)
    monkeypatch.setattr(pipeline.synthesizer, "run", watch(pipeline.synthesizer.run))
    pipeline(bench_clip(16, width=192, height=144, resolution=128), ArrayFrameSink())
    assert scopes == [(settings, pipeline.device)]
    assert inside["during_model"] and all(inside["during_model"]) and inside["now"] is False
    assert set(inside["flags"]) == {(tf32, tf32, benchmark)}
    assert _flags() == before
