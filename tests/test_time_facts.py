"""Time facts: compile is chosen by warm-up + clip x rate, and what is warm changes it."""
from __future__ import annotations

import pytest

from latentsync.engine import load_ruleset
from latentsync.facts import timing
from latentsync.facts.benchmark import BenchmarkFacts
from latentsync.facts.clip import assumed_clip
from latentsync.facts.gpu import gpu_facts_from_profile
from latentsync.facts.model import Facts
from latentsync.pipeline.compile_cache import CacheKey, CompileCache

KEY = CacheKey("NVIDIA H200", "9.0", "2.11.0", "3.6.0", "13.0", "0.1.0")


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(None)


def facts_for(ruleset, seconds, warm=timing.WarmFacts()):
    profiles = ruleset.gpu_profiles
    return Facts(gpu=gpu_facts_from_profile("h200-141gb", profiles["h200-141gb"]), clip=assumed_clip(seconds),
                 benchmark=BenchmarkFacts(available=False), warm=warm, time_model=ruleset.time_model,
                 model_version="1.6")


def compiled(ruleset, facts, goal="quality"):
    from latentsync.engine.plan import resolve_flat
    from latentsync.jobs import JobSpec

    job = JobSpec(video="x.mp4", output="y.mp4", weights="random", goal=goal)
    return resolve_flat(job, facts.flat(), ruleset).settings.compile


def test_the_saving_is_warmup_plus_clip_times_rate(ruleset):
    model = ruleset.time_model["quality"]
    cold = timing.compile_savings(ruleset.time_model, 60.0, timing.WarmFacts())["quality"]
    expected = 60 * (model["eager_s_per_video_s"] - model["compiled_s_per_video_s"]) - (
        model["compiled_warmup_cold_s"] - model["eager_warmup_cold_s"])
    assert cold.seconds == pytest.approx(expected, abs=0.01) and cold.compiled_state == "cold"
    assert "compile_saves_s_quality" in cold.explain()


def test_a_warm_compile_cache_makes_a_one_minute_quality_clip_compile(ruleset, tmp_path):
    assert compiled(ruleset, facts_for(ruleset, 60)) == "off"  # cold: 147 s of compile does not pay
    cache = CompileCache(KEY, tmp_path)
    cache.record("g", goal="quality", compiled=True, model_version="1.6", warmup_seconds=None, settings={})
    warm = timing.probe_warm("1.6", cache)
    assert "quality" in warm.compiled_cache and warm.source == "probed"
    facts = facts_for(ruleset, 60, warm)
    assert facts.flat()["compile_saves_s_quality"] > 10
    assert compiled(ruleset, facts) == "default"
    # another model version's entry is not this plan's
    assert "quality" not in timing.probe_warm("1.5", cache).compiled_cache


def test_a_measured_warmup_replaces_the_reference_one(ruleset, tmp_path):
    cache = CompileCache(KEY, tmp_path)
    cache.record("g", goal="quality", compiled=True, model_version="1.6", warmup_seconds=120.0, settings={},
                 started_warm=True)  # a slow machine: its warm compile takes 2 minutes
    saving = facts_for(ruleset, 60, timing.probe_warm("1.6", cache)).compile_savings()["quality"]
    assert saving.compiled_warmup == 120.0 and saving.compiled_state == "warm, measured"
    assert compiled(ruleset, facts_for(ruleset, 60, timing.probe_warm("1.6", cache))) == "off"


def test_graphs_held_by_a_resident_process_make_even_a_short_clip_compile(ruleset):
    warm = timing.WarmFacts(resident=True, compiled_in_process=frozenset({"quality"}))
    facts = facts_for(ruleset, 12.8, warm)
    assert facts.flat()["resident"] is True
    assert facts.compile_savings()["quality"].compiled_state == "in-process"
    assert compiled(ruleset, facts) == "default"
    assert compiled(ruleset, facts_for(ruleset, 12.8)) == "off"


def test_a_benchmark_of_this_card_scales_the_rates(ruleset):
    bench = BenchmarkFacts(available=True, modes={"normal": {"seconds_per_video_second": 8.52}})
    facts = facts_for(ruleset, 60)
    slower = Facts(gpu=facts.gpu, clip=facts.clip, benchmark=bench, time_model=ruleset.time_model)
    assert slower.speed_scale() == pytest.approx(2.0)
    assert slower.compile_savings()["quality"].eager_rate == pytest.approx(8.52)


def test_a_front_end_marks_the_process_resident():
    try:
        timing.mark_resident()
        assert timing.process_is_resident()
    finally:
        timing.mark_resident(False)


def test_explain_cites_the_time_fact_behind_compile(tmp_path, capsys):
    from latentsync.cli.rules import main as rules_main

    plan = tmp_path / "plan.yaml"
    plan.write_text("video: clip.mp4\noutput: out.mp4\nweights: random\n")
    assert rules_main(["explain", str(plan), "--assume-gpu", "h200-141gb", "--assume-model", "1.6",
                       "--duration", "150", "--goal", "quality"]) == 0
    out = capsys.readouterr().out
    compile_row = next(line for line in out.splitlines() if line.startswith("compile "))
    assert "default" in compile_row and "goals.compile-quality" in compile_row
    assert "time: compile_saves_s_quality = 150 s x (4.26 - 3.18)" in out and "[cold]" in out
    assert rules_main(["explain", str(plan), "--assume-gpu", "h200-141gb", "--assume-model", "1.6",
                       "--duration", "60", "--goal", "quality"]) == 0
    short = capsys.readouterr().out
    assert next(line for line in short.splitlines() if line.startswith("compile ")).split()[1] == "off"
