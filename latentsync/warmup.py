"""`latentsync-run warmup`: build this machine's kernel and compile caches once.

For each goal, the plans the rules resolve here are run on a short in-memory clip through
the user's run path (`runner.run_clip`, like the benchmark): the eager plan a short clip
gets, and the compiled plan a long one gets (when the rules compile on this card). Each
plan runs twice in this process; the first run's GPU seconds beyond the second's are its
warm-up, recorded in the keyed compile cache (`pipeline/compile_cache.py`) beside the
plan's graph key and goal. Later processes find the kernels and graphs on disk, the rules
find the cache warm (`compile_saves_s_<goal>`, `latentsync-rules explain`), and job
reports say `kernel_cache: warm`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from loguru import logger

WARMUP_GOALS = ("quality", "balanced", "preview")
SHORT_CLIP_S = 10.0  # a clip the rules plan eager
LONG_CLIP_S = 3600.0  # a clip the rules compile for, where they compile at all


@dataclass
class WarmupResult:
    goal: str
    variant: str  # "eager" | "compiled"
    status: str  # "ok" | "skipped" | "failed"
    cache_before: Optional[str] = None  # the job report's warm.kernel_cache of the first run
    first_gpu_s: Optional[float] = None
    steady_gpu_s: Optional[float] = None
    warmup_s: Optional[float] = None
    graph_key: Optional[str] = None
    cache_folder: Optional[str] = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plans_to_warm(goal: str, weights: str, ruleset, *, benchmark_cache=None, overrides=None) -> list[tuple[str, Any]]:
    """[(variant, RunPlan)] the rules resolve for `goal` on this machine: eager for a short
    clip; compiled for a long one, if the rules compile here."""
    from .bench.cases import planning_job
    from .engine import gather_facts, resolve_plan

    plans = []
    for variant, seconds in (("eager", SHORT_CLIP_S), ("compiled", LONG_CLIP_S)):
        job = planning_job(weights, goal=goal, duration=seconds, overrides=overrides)
        plan = resolve_plan(job, gather_facts(job, ruleset, benchmark_cache=benchmark_cache), ruleset)
        if (variant == "compiled") != plan.settings.compiles:
            if variant == "eager":
                plan = replace(plan, settings=plan.settings.replace(compile="off", cuda_graphs=False))
            else:
                continue
        plans.append((variant, plan))
    return plans


def warm_up(weights: str, *, goals=WARMUP_GOALS, variants=("eager", "compiled"), ruleset=None,
            benchmark_cache=None, options=None, overrides: Optional[dict] = None, progress=None) -> list[WarmupResult]:
    """Warm the caches for each goal's plans; one result per (goal, variant)."""
    from .bench.core import BenchmarkOptions, run_bench_clip
    from .engine import load_ruleset
    from .pipeline.compile_cache import CompileCache

    ruleset = ruleset or load_ruleset(None)
    options = options or BenchmarkOptions()
    results: list[WarmupResult] = []
    todo = [(goal, variant, plan) for goal in goals
            for variant, plan in plans_to_warm(goal, weights, ruleset, benchmark_cache=benchmark_cache,
                                               overrides=overrides)
            if variant in variants]
    for goal in goals:
        for variant in variants:
            if not any(g == goal and v == variant for g, v, _ in todo):
                results.append(WarmupResult(goal, variant, "skipped",
                                            note="the rules do not compile on this machine" if variant == "compiled"
                                            else "not asked"))
    for index, (goal, variant, plan) in enumerate(todo):
        if progress is not None:
            progress("plans", index, len(todo))
        logger.info("warming {} ({}): compile={}, batch {}", goal, variant, plan.settings.compile,
                    plan.settings.frames_per_batch)
        try:
            first = run_bench_clip(plan, weights, options)
            second = run_bench_clip(plan, weights, options)
        except Exception as error:  # noqa: BLE001 — one plan failing (out of memory) leaves the others to warm
            logger.warning("warm-up of {} ({}) failed: {}", goal, variant, error)
            results.append(WarmupResult(goal, variant, "failed", note=str(error)[:300]))
            continue
        warm = first.warm or {}
        first_gpu, steady_gpu = first.timings.get("gpu", 0.0), second.timings.get("gpu", 0.0)
        warmup = max(0.0, first_gpu - steady_gpu)
        if warm.get("graph_key") and warm.get("kernel_cache") != "user-managed":
            cache = CompileCache.for_device(first.device.split(":")[0] if first.device else "cpu")
            cache.record(warm["graph_key"], goal=goal, compiled=plan.settings.compiles,
                         model_version=str(plan.facts.get("model_version", "")),
                         warmup_seconds=warmup, settings=plan.settings.to_dict(),
                         started_warm=warm.get("kernel_cache") == "warm")
        results.append(WarmupResult(goal, variant, "ok", cache_before=warm.get("kernel_cache"),
                                    first_gpu_s=round(first_gpu, 2), steady_gpu_s=round(steady_gpu, 2),
                                    warmup_s=round(warmup, 2), graph_key=warm.get("graph_key"),
                                    cache_folder=warm.get("cache_folder")))
    if progress is not None:
        progress("plans", len(todo), len(todo))
    order = {(g, v): i for i, (g, v) in enumerate((g, v) for g in goals for v in variants)}
    return sorted(results, key=lambda r: order.get((r.goal, r.variant), 0))


def format_results(results: list[WarmupResult]) -> str:
    lines = [f"{'goal':9s} {'plan':9s} {'status':8s} {'cache before':13s} {'first GPU s':>11s} {'steady GPU s':>12s} "
             f"{'warm-up s':>9s}  note"]
    for r in results:
        def num(value):
            return f"{value:.2f}" if isinstance(value, (int, float)) else "-"

        lines.append(f"{r.goal:9s} {r.variant:9s} {r.status:8s} {r.cache_before or '-':13s} {num(r.first_gpu_s):>11s} "
                     f"{num(r.steady_gpu_s):>12s} {num(r.warmup_s):>9s}  {r.note}")
    folders = sorted({r.cache_folder for r in results if r.cache_folder})
    if folders:
        lines.append("cache: " + ", ".join(folders))
    return "\n".join(lines)
