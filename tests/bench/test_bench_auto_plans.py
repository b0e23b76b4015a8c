"""`auto` end to end: an assumed 8 GB card with a 3 s clip and an assumed 80 GB card with a 60 s clip
resolve different plans, and the runner applies them (different UNet work on the same clip)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from latentsync.bench.cases import planning_job
from latentsync.engine import gather_facts, load_ruleset, resolve_plan
from latentsync.paths import examples_dir


def _auto_plan(ruleset, gpu: str, seconds: float):
    job = planning_job("random", goal="auto", duration=seconds)
    job.assume["gpu"] = gpu
    return resolve_plan(job, gather_facts(job, ruleset, benchmark_cache=Path("/nonexistent/benchmark.json")), ruleset)


@pytest.fixture(scope="module")
def plans():
    ruleset = load_ruleset()
    return _auto_plan(ruleset, "rtx4060-8gb", 3.0), _auto_plan(ruleset, "h100-80gb", 60.0)


def test_auto_resolves_different_plans_for_small_card_short_clip_and_big_card_long_clip(plans):
    small, big = plans
    assert small.goal == "quality" and big.goal == "balanced"
    assert small.settings["deepcache"] is False and big.settings["deepcache"] is True
    assert small.settings["frames_per_batch"] == 16 and big.settings["frames_per_batch"] > 16
    assert small.settings["vae_tiling"] is True and big.settings["vae_tiling"] is False
    # No benchmark for either card: the plans say how to get one.
    assert any("no benchmark: run latentsync-bench" in note for note in small.notes + big.notes)


@pytest.mark.slow
def test_the_runner_applies_each_auto_plan(plans, tmp_path):
    from latentsync.jobs import JobSpec
    from latentsync.testing.pipeline_helpers import run_file_clip

    assets = examples_dir() / "assets"
    if not (assets / "quickstart.mp4").is_file():
        pytest.skip("quickstart assets missing")
    video = tmp_path / "quickstart.mp4"
    shutil.copy(assets / "quickstart.mp4", video)
    stats = {}
    for name, plan in zip(("8gb-3s", "80gb-60s"), plans):
        # The plan's policy settings, on this CPU: the small model, fp32, few steps.
        settings = plan.settings.replace(device="cpu", precision="fp32", resolution=128, steps=3, compile="off",
                                         cuda_graphs=False, attention_backend="auto",
                                         temporal_attention_kernel="sdpa", geglu_kernel="torch",
                                         face_backend="mediapipe")
        spec = JobSpec(video=video, audio=assets / "quickstart_speech.wav", output=tmp_path / f"{name}.mp4",
                       weights="random-small")
        result = run_file_clip(spec, settings)
        assert (tmp_path / f"{name}.mp4").is_file()
        stats[name] = result.stats
    # DeepCache on the big card's plan: cached UNet calls; the small card's plan runs every call in full.
    assert stats["8gb-3s"]["cached_calls"] == 0 and stats["80gb-60s"]["cached_calls"] > 0
    # One chunk per batch vs several: the big card's plan makes fewer, larger UNet batches.
    assert stats["80gb-60s"]["unet_calls"] < stats["8gb-3s"]["unet_calls"]
