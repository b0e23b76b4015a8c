"""latentsync-bench: cache written and validated, bad caches, interruptions, out-of-memory limits,
stale detection, and the engine reading the measured facts."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from loguru import logger

from latentsync.bench import BenchmarkOptions, cache_problem, run_benchmark
from latentsync.bench import core as bench_core
from latentsync.cli.bench import main as bench_main
from latentsync.cli.rules import main as rules_main
from latentsync.engine import load_ruleset, schema_errors
from latentsync.facts import benchmark_key, gpu_facts_from_profile, read_benchmark_cache, update_benchmark_cache


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


@pytest.fixture
def warnings_seen():
    seen: list[str] = []
    handler = logger.add(lambda message: seen.append(str(message)), level="WARNING", format="{message}")
    yield seen
    logger.remove(handler)


class _FakePipelines:
    """Stands in for `latentsync.runner.build_pipeline`: no models, no tensors; each "run" reports
    a GPU time that depends on the settings like the real one does. `oom(settings)` says which
    settings run out of device memory (torch's error, as a real pipeline raises it)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.oom = lambda settings: False

    def build(self, weights, settings):
        return lambda source, sink, **kwargs: self.run(settings, source, sink)

    def run(self, settings, source, sink):
        from latentsync.runner import PipelineResult

        self.calls.append(settings.to_dict())
        if self.oom(settings):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        media = source.open()
        with sink.open(media) as writer:
            writer.write_frames(source.frames)
        unet_calls = settings.steps * (2 if not settings.deepcache else 1)
        seconds = 0.01 * unet_calls * settings.frames_per_batch / settings.chunk_frames
        return PipelineResult(frames_total=media.frame_count, video_seconds=media.frame_count / 25.0,
                              timings={"probe": 0.0, "gpu": seconds}, frames_without_face=[], peak_vram_gib=None,
                              device="cpu", stats={"unet_calls": settings.steps, "cached_calls": 0})


@pytest.fixture
def fake_gpu_work(monkeypatch):
    """The benchmark's real flow (cases, `time_plan`, `run_clip` and its out-of-memory ladder)
    over fake pipelines."""
    pipelines = _FakePipelines()
    monkeypatch.setattr("latentsync.runner.build_pipeline", pipelines.build)
    monkeypatch.setattr(bench_core, "_vae_seconds_per_chunk", lambda *args, **kwargs: (0.001, 0.001))
    return pipelines


def _cache_entries(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    assert schema_errors(data, "benchmark_cache") == []
    return data["entries"]


@pytest.mark.slow  # real model work: ~15 s on an idle 2-core CPU, ~50 s on a loaded one
def test_cpu_quick_run_times_real_stages_and_writes_a_valid_cache(tmp_path):
    cache = tmp_path / "bench" / "benchmark.json"
    seen = []
    report = run_benchmark("quick", cache_path=cache, progress=lambda stage, done, total: seen.append((done, total)),
                           options=BenchmarkOptions.tiny())
    [entry] = _cache_entries(cache)
    assert report.entry == entry and report.cache_path == cache
    assert report.device == "cpu" and report.weights == "random-small"
    # Every speed mode got a measurement (none compiles on the CPU), each from a real FaceSynthesizer run.
    assert set(entry["modes"]) == {"normal", "fast", "turbo", "ultra"}
    ok = [case for case in report.cases if case.status == "ok"]
    assert ok and all(case.seconds_per_video_second > 0 for case in ok)
    deepcache = [case for case in ok if case.settings["deepcache"]]
    assert deepcache and all(case.cached_calls_per_batch >= 1 for case in deepcache)
    assert any(case.cached_calls_per_batch == 0 for case in ok if not case.settings["deepcache"])
    assert "no CUDA GPU" in report.text and "SMOKE RUN" in report.summary
    assert seen and seen[-1][0] == seen[-1][1]  # the progress bar reached its end
    assert not list(cache.parent.glob("*.partial*"))


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema_version": 7, "entries": "x"}),
                                     json.dumps({"hello": "another tool's cache"})])
def test_corrupt_or_foreign_cache_is_ignored_with_a_warning_and_rebuilt(tmp_path, fake_gpu_work, warnings_seen,
                                                                        content):
    cache = tmp_path / "benchmark.json"
    cache.write_text(content)
    assert cache_problem(cache) is not None
    report = run_benchmark("quick", cache_path=cache, options=BenchmarkOptions.tiny())
    assert any("ignored, it will be rebuilt" in message for message in warnings_seen)
    assert _cache_entries(cache) == [report.entry]


def test_interrupted_benchmark_leaves_the_previous_cache_intact(tmp_path, fake_gpu_work, monkeypatch):
    cache = tmp_path / "benchmark.json"
    run_benchmark("quick", cache_path=cache, options=BenchmarkOptions.tiny())
    before = cache.read_bytes()
    real = bench_core.time_plan
    count = {"n": 0}

    def interrupted(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_core, "time_plan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("quick", cache_path=cache, options=BenchmarkOptions.tiny())
    assert count["n"] == 2
    assert cache.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark.json"]


def test_out_of_memory_in_a_plan_is_recorded_not_raised(tmp_path, fake_gpu_work):
    fake_gpu_work.oom = lambda settings: not settings.deepcache
    cache = tmp_path / "benchmark.json"
    report = run_benchmark("quick", cache_path=cache, options=BenchmarkOptions.tiny())
    statuses = {case.status for case in report.cases}
    assert statuses == {"ok", "oom"}
    oom_cases = [case for case in report.cases if case.status == "oom"]
    assert oom_cases and all(not case.settings["deepcache"] for case in oom_cases)
    # run_clip stepped down the case's own ladder (none on a CPU) before giving up
    assert all(case.error.startswith("out of device memory and no fallback left") for case in oom_cases)
    [entry] = _cache_entries(cache)
    assert "normal" not in entry["modes"] and "fast" in entry["modes"]  # normal = quality, no DeepCache
    assert "out of device memory" in report.text.lower()


def test_stress_records_the_largest_batch_that_fitted(tmp_path, fake_gpu_work):
    fake_gpu_work.oom = lambda settings: settings.frames_per_batch > 4  # two 2-frame chunks fit, three do not
    cache = tmp_path / "benchmark.json"
    report = run_benchmark("stress", cache_path=cache, options=BenchmarkOptions.tiny())
    assert [(s.frames_per_batch, s.fits) for s in report.stress] == [(2, True), (4, True), (6, False)]
    [entry] = _cache_entries(cache)
    assert entry["max_frames_per_batch"] == 4
    assert "OUT OF MEMORY" in report.text


def _h100_entry(max_frames: int = 32, **key_changes) -> dict:
    from latentsync.bench.core import CaseResult, build_entry

    profile = load_ruleset().gpu_profiles["h100-80gb"]
    gpu = gpu_facts_from_profile("h100-80gb", profile)
    case = CaseResult(name="x", labels=["speed normal"], modes=["normal"], settings={}, status="ok",
                      frames_per_batch=max_frames, seconds_per_video_second=5.2, peak_vram_gib=10.9)
    entry = build_entry(gpu, [case], [], resolution=512, precision="fp16", mode="quick", options=BenchmarkOptions())
    entry["key"].update(key_changes)
    return entry


def _plan(tmp_path: Path) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text("video: clip.mp4\noutput: out.mp4\nweights: random\ngoal: auto\n")
    return plan


def test_explain_cites_the_measured_benchmark_facts(tmp_path, capsys):
    cache = update_benchmark_cache(tmp_path / "benchmark.json", _h100_entry(max_frames=32))
    args = ["explain", str(_plan(tmp_path)), "--assume-gpu", "h100-80gb", "--duration", "60"]
    assert rules_main(args) == 0
    without = capsys.readouterr().out
    assert "no benchmark: run latentsync-bench" in without
    assert rules_main(args + ["--benchmark-cache", str(cache)]) == 0
    measured = capsys.readouterr().out
    row = next(line for line in measured.splitlines() if line.startswith("frames_per_batch"))
    assert row.split()[1] == "32" and "bench.batch-32" in row and "75_benchmark.yaml" in row
    assert "no benchmark" not in measured


def test_stale_cache_after_torch_or_driver_change_says_rerun(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "benchmark.json"
    update_benchmark_cache(cache, _h100_entry(torch="1.0.0"))
    assert rules_main(["explain", str(_plan(tmp_path)), "--assume-gpu", "h100-80gb", "--duration", "60",
                       "--benchmark-cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "run latentsync-bench" in out and "stale (torch changed)" in out
    assert "bench.batch" not in out

    # A probed card whose driver changed since the measurement.
    gpu = replace(gpu_facts_from_profile("h100-80gb", load_ruleset().gpu_profiles["h100-80gb"]),
                  driver="560.1", source="nvml", profile=None)
    cache.unlink()
    update_benchmark_cache(cache, _h100_entry(driver="550.0"))
    assert read_benchmark_cache(cache, replace(gpu, driver="550.0")).available
    facts = read_benchmark_cache(cache, gpu)
    assert not facts.available and "driver" in facts.reason
    monkeypatch.setattr("latentsync.facts.gather.probe_gpu", lambda: gpu)
    assert rules_main(["explain", str(_plan(tmp_path)), "--duration", "60", "--benchmark-cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "run latentsync-bench" in out and "stale (driver changed)" in out


def test_entry_key_is_the_gpu_and_software(tmp_path):
    entry = _h100_entry()
    gpu = gpu_facts_from_profile("h100-80gb", load_ruleset().gpu_profiles["h100-80gb"])
    assert entry["key"] == benchmark_key(gpu)
    assert set(entry["key"]) == {"gpu_uuid", "gpu_name", "vram_total_gib", "driver", "torch", "package"}


def test_cli_json_and_clear(tmp_path, fake_gpu_work, capsys):
    cache = tmp_path / "benchmark.json"
    assert bench_main(["--tiny", "--no-progress", "--cache", str(cache), "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["entry"]["key"]["gpu_name"] and data["mode"] == "quick"
    assert len(_cache_entries(cache)) == 1
    assert bench_main(["--clear", "--cache", str(cache)]) == 0
    assert _cache_entries(cache) == []


def test_cli_rejects_a_bad_resolution(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--resolution", "1024"])
    assert exit_info.value.code == 2
