"""Measured seconds per video-second from latentsync-bench reach the rules."""
from pathlib import Path

from latentsync.engine import load_ruleset, resolve_plan
from latentsync.facts import Facts
from latentsync.facts.benchmark import BenchmarkFacts
from latentsync.facts.clip import assumed_clip
from latentsync.facts.gpu import gpu_facts_from_profile
from latentsync.jobs import JobSpec


def facts_with(modes, *, available=True):
    ruleset = load_ruleset()
    gpu = gpu_facts_from_profile("rtx3060-12gb", ruleset.gpu_profiles["rtx3060-12gb"])
    bench = BenchmarkFacts(available=available, max_frames_per_batch=16, peak_vram_gib=10.0, modes=modes)
    return ruleset, Facts(gpu=gpu, clip=assumed_clip(60.0), benchmark=bench)


def test_measured_mode_times_become_facts():
    _, facts = facts_with({"normal": {"seconds_per_video_second": 30.25}, "fast": {"seconds_per_video_second": 14.5}})
    flat = facts.flat()
    assert flat["bench_s_per_video_s_normal"] == 30.25 and flat["bench_s_per_video_s_fast"] == 14.5
    assert "bench_s_per_video_s_turbo" not in flat  # not measured: absent, never None


def test_stale_or_missing_benchmarks_give_no_measured_facts():
    _, facts = facts_with({"fast": {"seconds_per_video_second": 14.5}}, available=False)
    assert "bench_s_per_video_s_fast" not in facts.flat()


def test_a_slow_measurement_changes_the_plan_for_a_long_clip():
    job = JobSpec(video=Path("missing.mp4"), output=Path("o.mp4"))
    ruleset, slow = facts_with({"fast": {"seconds_per_video_second": 14.5}})
    _, quick = facts_with({"fast": {"seconds_per_video_second": 6.0}})
    slow_plan, quick_plan = resolve_plan(job, slow, ruleset), resolve_plan(job, quick, ruleset)
    assert slow_plan.goal == "preview" and quick_plan.goal == "balanced"
    assert "goal.auto.long-measured-slow" in slow_plan.fired_rules
    assert slow_plan.settings["steps"] < quick_plan.settings["steps"]  # preview runs fewer UNet steps
