"""GPU, clip and benchmark facts: probing, pinning, and the benchmark cache's freshness rules."""
from __future__ import annotations

import json
import sys
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from latentsync.engine import load_ruleset
from latentsync.errors import InvalidInputError, MediaError
from latentsync.facts import (GpuFacts, benchmark_key, gather_facts, gpu_facts_from_profile, probe_clip, probe_gpu,
                              read_benchmark_cache, update_benchmark_cache)
from latentsync.facts import gpu as gpu_module
from latentsync.jobs import JobSpec


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


def make_video(path: Path, frames: int = 30, fps: int = 25, size=(64, 48), audio_seconds: float | None = None) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        audio = None
        if audio_seconds is not None:
            audio = container.add_stream("aac", rate=16000)
        for index in range(frames):
            image = np.full((size[1], size[0], 3), index * 5 % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            samples = np.zeros((1, int(16000 * audio_seconds)), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in audio.encode(frame):
                container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


def test_probe_clip(tmp_path):
    clip = probe_clip(make_video(tmp_path / "c.mp4", frames=50, fps=25, audio_seconds=2.0))
    assert clip.frame_count == 50 and clip.fps == 25.0 and abs(clip.duration_s - 2.0) < 0.05
    assert (clip.width, clip.height) == (64, 48) and clip.audio_present
    assert clip.audio_duration_s == pytest.approx(2.0, abs=0.1)


def test_gather_facts_probes_the_clip_and_pins_duration(tmp_path, ruleset):
    video = make_video(tmp_path / "c.mp4", frames=25)
    job = JobSpec(video=video, output=tmp_path / "o.mp4", assume={"gpu": "rtx4060-8gb", "duration": 42})
    facts = gather_facts(job, ruleset, benchmark_cache=tmp_path / "none.json")
    assert facts.gpu.profile == "rtx4060-8gb" and facts.gpu.compute_capability == 8.9 and facts.gpu.bf16
    assert facts.clip.duration_s == 42 and facts.clip.width == 64 and facts.clip.frame_count == 42 * 25
    flat = facts.flat()
    assert flat["clip_duration_s"] == 42 and flat["gpu_profile"] == "rtx4060-8gb" and not flat["bench_available"]
    assert any("no benchmark" in note for note in facts.notes)


def test_gather_facts_without_video(tmp_path, ruleset):
    job = JobSpec(video=tmp_path / "missing.mp4", output=tmp_path / "o.mp4", assume={"gpu": "cpu", "duration": 3})
    facts = gather_facts(job, ruleset)
    assert facts.clip.source == "assumed" and facts.clip.frame_count == 75 and facts.gpu.device == "cpu"
    with pytest.raises(MediaError, match="missing.mp4"):
        gather_facts(JobSpec(video=tmp_path / "missing.mp4", output=tmp_path / "o.mp4"), ruleset)
    with pytest.raises(InvalidInputError, match="unknown GPU profile 'rtx9999'") as caught:
        gather_facts(JobSpec(video=tmp_path / "m.mp4", output=tmp_path / "o.mp4",
                             assume={"gpu": "rtx9999", "duration": 3}), ruleset)
    assert "rtx4090-24gb" in caught.value.hint


def test_free_vram_can_be_pinned(tmp_path, ruleset):
    job = JobSpec(video=tmp_path / "m.mp4", output=tmp_path / "o.mp4",
                  assume={"gpu": "rtx4090-24gb", "duration": 3, "free_vram_gib": 6.5})
    facts = gather_facts(job, ruleset)
    assert facts.gpu.vram_free_gib == 6.5 and facts.gpu.vram_total_gib == 23.99


def test_probe_gpu_on_this_machine_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(gpu_module, "probe_nvml", lambda: None)
    monkeypatch.setattr(gpu_module, "probe_torch", lambda: None)
    facts = probe_gpu()
    assert facts.device == "cpu" and facts.vram_total_gib == 0 and facts.source == "cpu"


def test_probe_nvml_reads_the_binding(monkeypatch):
    class Memory:
        total, free = int(23.99 * 2**30), int(20 * 2**30)

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda index: f"h{index}", nvmlDeviceGetMemoryInfo=lambda handle: Memory,
        nvmlDeviceGetCudaComputeCapability=lambda handle: (8, 9), nvmlDeviceGetName=lambda handle: b"RTX 4090",
        nvmlDeviceGetUUID=lambda handle: "GPU-1234", nvmlSystemGetDriverVersion=lambda: "560.1")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    facts = gpu_module.probe_nvml()
    assert (facts.name, facts.uuid, facts.device_count, facts.compute_capability, facts.bf16) == \
        ("RTX 4090", "GPU-1234", 2, 8.9, True)
    assert facts.vram_total_gib == pytest.approx(23.99, abs=0.01) and facts.driver == "560.1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_module.probe_nvml() is None
    # NVML sees a card but this torch build cannot use CUDA: plan for the CPU.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(gpu_module, "_torch_can_use_cuda", lambda: False)
    assert probe_gpu().device == "cpu"


def test_probe_gpu_counts_this_processs_cached_cuda_memory_as_free(monkeypatch):
    """After a job, torch keeps its blocks cached; NVML reports them used. The next plan in
    the same process must see them as free, or it picks smaller batches (measured: 48
    instead of 64 frames per batch on an H100 after one quality job)."""
    nvml = GpuFacts(device="cuda", name="H100", uuid="GPU-1", vram_total_gib=79.2, vram_free_gib=60.0,
                    compute_capability=9.0, bf16=True, driver="560.1", device_count=1, source="nvml")
    monkeypatch.setattr(gpu_module, "probe_nvml", lambda: nvml)
    monkeypatch.setattr(gpu_module, "_torch_can_use_cuda", lambda: True)
    state = {"initialized": True, "reserved": 14 * 2**30, "allocated": 3 * 2**30}
    cuda = types.SimpleNamespace(is_initialized=lambda: state["initialized"],
                                 memory_reserved=lambda device: state["reserved"],
                                 memory_allocated=lambda device: state["allocated"])
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert probe_gpu().vram_free_gib == pytest.approx(71.0)  # 60 free + 11 cached, not in use
    state["reserved"] = 40 * 2**30
    state["allocated"] = 0
    assert probe_gpu().vram_free_gib == pytest.approx(79.2)  # never more than the card
    state["initialized"] = False  # no CUDA context in this process: nothing cached
    assert probe_gpu().vram_free_gib == 60.0


def _gpu() -> GpuFacts:
    return GpuFacts(device="cuda", name="RTX 4090", uuid="GPU-1", vram_total_gib=23.99, vram_free_gib=22.0,
                    compute_capability=8.9, bf16=True, driver="560.1", device_count=1, source="nvml")


def _entry(gpu: GpuFacts, **key) -> dict:
    return {"key": {**benchmark_key(gpu), **key}, "measured_at": "2026-11-26T10:00:00", "max_frames_per_batch": 48,
            "peak_vram_gib": 20.5, "modes": {"normal": {"seconds_per_video_second": 7.5, "peak_vram_gib": 20.5}}}


def test_benchmark_cache_fresh_entry(tmp_path):
    cache = tmp_path / "bench.json"
    update_benchmark_cache(cache, _entry(_gpu()))
    facts = read_benchmark_cache(cache, _gpu())
    assert facts.available and facts.max_frames_per_batch == 48 and facts.modes["normal"]["seconds_per_video_second"] == 7.5
    assert not list(tmp_path.glob("*.partial.*"))


@pytest.mark.parametrize("content, reason", [
    (None, "no benchmark cache"),
    ("{not json", "unreadable"),
    ('{"schema_version": 1, "entries": [{"key": 3}]}', "invalid"),
])
def test_benchmark_cache_absent_or_corrupt_is_empty(tmp_path, content, reason):
    cache = tmp_path / "bench.json"
    if content is not None:
        cache.write_text(content)
    facts = read_benchmark_cache(cache, _gpu())
    assert not facts.available and reason in facts.reason


def test_benchmark_cache_stale_or_other_card(tmp_path):
    cache = tmp_path / "bench.json"
    update_benchmark_cache(cache, _entry(_gpu(), torch="1.0"))
    assert "stale (torch changed)" in read_benchmark_cache(cache, _gpu()).reason
    other = GpuFacts(**{**_gpu().to_dict(), "uuid": "GPU-2"})
    assert "no entry" in read_benchmark_cache(cache, other).reason
    # An assumed profile has no uuid or driver: name and VRAM select the entry.
    cache.unlink()
    update_benchmark_cache(cache, _entry(_gpu(), gpu_name="NVIDIA GeForce RTX 4090"))
    profile = gpu_facts_from_profile("rtx4090-24gb", {"gpu_name": "NVIDIA GeForce RTX 4090", "device": "cuda",
                                                     "vram_total_gib": 23.99, "vram_free_gib": 22.8,
                                                     "compute_capability": 8.9})
    assert read_benchmark_cache(cache, profile).available
    assert json.loads(cache.read_text())["schema_version"] == 1
