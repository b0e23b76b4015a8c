"""A resident process pays model load and compile once; `latentsync-run warmup` fills the
keyed cache that later runs (and the rules) find warm."""
from __future__ import annotations

import json

import pytest
import torch

from latentsync.api import plan_for_arrays
from latentsync.bench.core import BenchmarkOptions, run_bench_clip
from latentsync.cli.run import main as run_main
from latentsync.weights import clear_model_cache

SMALL = {"steps": 2, "chunk_frames": 2, "frames_per_batch": 2, "device": "cpu", "precision": "fp32"}


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    clear_model_cache()
    yield tmp_path / "xdg"
    clear_model_cache()


@pytest.fixture
def counting_compile(monkeypatch):
    """torch.compile that compiles nothing but counts how often it is asked."""
    calls = []

    def compile_(fn=None, *args, **kwargs):
        calls.append(kwargs.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", compile_)
    return calls


def test_the_second_clip_of_a_resident_process_pays_no_load_or_compile(cache_home, counting_compile):
    _, plan = plan_for_arrays(n_frames=4, fps=25.0, audio_seconds=4 / 25, weights="random-small", goal="quality",
                              overrides={**SMALL, "compile": "default"})
    options = BenchmarkOptions.tiny()
    first = run_bench_clip(plan, "random-small", options, frames=4)
    compiles_after_first = len(counting_compile)
    second = run_bench_clip(plan, "random-small", options, frames=4)
    assert compiles_after_first >= 1  # UNet (and VAE parts) asked for compilation once
    assert len(counting_compile) == compiles_after_first  # the second clip compiles nothing
    assert first.warm["models"] == "loaded" and first.warm["compiled_graphs"] == "cold"
    assert second.warm["models"] == "resident" and second.warm["compiled_graphs"] == "in-process"
    assert second.timings["load_models"] < first.timings["load_models"] / 5
    # and the cache remembers the goal's compiled plan for the next process (and the rules)
    manifest = json.loads(next(cache_home.glob("latentsync-runner/compile/*/warm.json")).read_text())
    entry = manifest["entries"][first.warm["graph_key"]]
    assert entry["goal"] == "quality" and entry["compiled"] is True


def test_warmup_fills_the_cache_a_later_run_finds_warm(cache_home, capsys):
    code = run_main(["warmup", "--weights", "random-small", "--tiny", "--goals", "preview", "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    eager = next(r for r in results if r["variant"] == "eager")
    assert eager["status"] == "ok" and eager["cache_before"] == "cold" and eager["warmup_s"] >= 0
    compiled = next(r for r in results if r["variant"] == "compiled")
    assert compiled["status"] == "skipped"  # the rules never compile on a CPU
    manifest = json.loads(next(cache_home.glob("latentsync-runner/compile/*/warm.json")).read_text())
    entry = manifest["entries"][eager["graph_key"]]
    assert entry["goal"] == "preview" and entry["compiled"] is False and "warmup_seconds_cold" in entry
    # a fresh process (cleared models) running the same plan finds the kernels warm
    clear_model_cache()
    assert run_main(["warmup", "--weights", "random-small", "--tiny", "--goals", "preview", "--json"]) == 0
    again = next(r for r in json.loads(capsys.readouterr().out) if r["variant"] == "eager")
    assert again["cache_before"] == "warm" and again["graph_key"] == eager["graph_key"]


def test_warmup_refuses_an_unknown_goal(cache_home, capsys):
    assert run_main(["warmup", "--goals", "fastest"]) == 2
    assert "--goals" in capsys.readouterr().err
