"""Measured sync drops per goal (the benchmark cache's `quality` section) become facts and move auto's goal."""
from pathlib import Path

from latentsync.contracts import schema_errors
from latentsync.engine import load_ruleset, resolve_plan
from latentsync.facts import Facts, GpuFacts, benchmark_key, read_benchmark_cache, update_benchmark_cache
from latentsync.facts.clip import assumed_clip
from latentsync.jobs import JobSpec

GPU = GpuFacts(device="cuda", name="NVIDIA GeForce RTX 4060", uuid="GPU-8", vram_total_gib=8.0, vram_free_gib=7.5,
               compute_capability=8.9, bf16=True, driver="560.1", device_count=1, source="nvml")


def entry(quality=None):
    data = {"key": benchmark_key(GPU), "measured_at": "2026-12-01T10:00:00", "max_frames_per_batch": 16,
            "peak_vram_gib": 7.0, "modes": {"fast": {"seconds_per_video_second": 5.0}}}
    if quality is not None:
        data["quality"] = quality
    return data


def test_the_quality_section_becomes_sync_drop_facts(tmp_path):
    quality = {"quality": {"seconds_per_video_second": 9.0, "sync_confidence": 0.31, "sync_drop": 0.0},
               "balanced": {"seconds_per_video_second": 5.0, "sync_confidence": 0.29, "sync_drop": 0.02,
                            "psnr_vs_quality": 31.5},
               "preview": {"seconds_per_video_second": 2.0, "sync_confidence": 0.2, "sync_drop": 0.11,
                           "psnr_vs_quality": None}}
    cache = update_benchmark_cache(tmp_path / "bench.json", entry(quality))
    bench = read_benchmark_cache(cache, GPU)
    assert bench.available and bench.quality == quality
    flat = Facts(gpu=GPU, clip=assumed_clip(60.0), benchmark=bench).flat()
    assert flat["sync_drop_preview"] == 0.11 and flat["sync_drop_balanced"] == 0.02


def test_without_a_quality_section_or_a_fresh_benchmark_there_are_no_sync_facts(tmp_path):
    bench = read_benchmark_cache(update_benchmark_cache(tmp_path / "bench.json", entry()), GPU)
    assert bench.available and bench.quality == {}
    flat = Facts(gpu=GPU, clip=assumed_clip(60.0), benchmark=bench).flat()
    assert "sync_drop_preview" not in flat and "sync_drop_balanced" not in flat
    stale = read_benchmark_cache(tmp_path / "missing.json", GPU)
    assert "sync_drop_preview" not in Facts(gpu=GPU, clip=assumed_clip(60.0), benchmark=stale).flat()


def test_schema_checks_the_quality_section():
    good = {"schema_version": 1, "entries": [entry({"preview": {"sync_drop": 0.1}})]}
    assert schema_errors(good, "benchmark_cache") == []
    assert schema_errors({"schema_version": 1, "entries": [entry({"draft": {"sync_drop": 0.1}})]}, "benchmark_cache")
    assert schema_errors({"schema_version": 1, "entries": [entry({"preview": {"lse_c": 1.0}})]}, "benchmark_cache")


def test_a_measured_drop_moves_autos_goal_through_the_cache(tmp_path):
    ruleset = load_ruleset()
    job = JobSpec(video=Path("missing.mp4"), output=Path("o.mp4"))

    def plan(quality):
        bench = read_benchmark_cache(update_benchmark_cache(tmp_path / f"{len(quality)}.json", entry(quality)), GPU)
        return resolve_plan(job, Facts(gpu=GPU, clip=assumed_clip(60.0), benchmark=bench), ruleset)

    unmeasured, measured = plan({}), plan({"preview": {"sync_drop": 0.2}})
    assert unmeasured.goal == "preview" and measured.goal == "balanced"
    assert "goal.auto.sync-preview-drop" in measured.fired_rules
    assert "goal.auto.sync-preview-drop" not in unmeasured.fired_rules
