"""What a run found warm, and what it leaves warm for the next process.

Before a run: whether its models were already resident in this process, whether this
plan's kernels and compiled graphs are in the keyed on-disk cache (`compile_cache`), and,
for a compiled plan whose inductor files were lost, refilling them from the saved
artifact. After a successful run: the plan's graph key is recorded as warm (with the
warm-up it cost when the clip was long enough to tell), and a compiled plan that started
cold saves torch's portable cache artifacts. The job report's `warm` section says all of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any, Optional

from loguru import logger

from .compile_cache import CompileCache

# artifacts already loaded into this process's torch caches (torch's caches are process-wide)
_loaded_artifacts: set[tuple[str, str]] = set()


@dataclass
class WarmStart:
    cache: CompileCache
    graph: str
    compiled: bool
    kernels: str  # "warm" | "cold" | "user-managed": the on-disk kernel/compile cache for this plan
    graphs: str  # compiled plans: "in-process" | "warm" | "cold" | "user-managed"; eager: "not compiled"
    models: str  # "resident" (this process had them) | "loaded"
    artifacts_loaded: bool = False

    def to_report(self, warmup_seconds: Optional[float]) -> dict[str, Any]:
        return {"models": self.models, "kernel_cache": self.kernels, "compiled_graphs": self.graphs,
                "artifacts_loaded": self.artifacts_loaded, "graph_key": self.graph,
                "cache_folder": str(self.cache.folder), "first_batch_warmup_s": warmup_seconds}


def before_run(pipeline, *, models_resident: bool) -> Optional[WarmStart]:
    """None for a stand-in pipeline without a cache (test doubles, custom executors)."""
    cache: Optional[CompileCache] = getattr(pipeline, "compile_cache", None)
    if cache is None:
        return None
    compiled = pipeline.settings.compiles
    user = cache.user_managed()
    warm = cache.is_warm(pipeline.graph_key)
    kernels = "user-managed" if user else "warm" if warm else "cold"
    if not compiled:
        graphs = "not compiled"
    elif pipeline.models.compiled_calls.get(pipeline.graph_key):
        graphs = "in-process"
    else:
        graphs = kernels
    state = WarmStart(cache=cache, graph=pipeline.graph_key, compiled=compiled, kernels=kernels, graphs=graphs,
                      models="resident" if models_resident else "loaded")
    marker = (str(cache.folder), pipeline.graph_key)
    if compiled and not user and graphs != "in-process" and marker not in _loaded_artifacts:
        with cache.in_use() as usable:
            state.artifacts_loaded = usable and cache.load_artifacts(pipeline.graph_key)
        if state.artifacts_loaded:
            _loaded_artifacts.add(marker)
    return state


def first_batch_warmup(batch_seconds: list[float]) -> Optional[float]:
    """The first UNet batch's seconds beyond a steady one: needs two full batches after it
    (the last batch may be short)."""
    if len(batch_seconds) < 3:
        return None
    return max(0.0, batch_seconds[0] - median(batch_seconds[1:-1]))


def after_run(state: Optional[WarmStart], pipeline, stats: dict[str, Any], *, goal: Optional[str]) -> dict[str, Any]:
    if state is None:
        return {}
    warmup = first_batch_warmup(list(stats.get("gpu_batch_seconds") or []))
    if state.compiled:
        pipeline.models.compiled_calls[state.graph] = True
    if state.kernels != "user-managed":
        try:
            # graphs already in this process: the first batch measured no warm-up worth recording
            measured = None if state.graphs == "in-process" or state.models == "resident" else warmup
            state.cache.record(state.graph, goal=goal, compiled=state.compiled,
                               model_version=pipeline.models.version, warmup_seconds=measured,
                               settings=pipeline.settings.to_dict(), started_warm=state.kernels == "warm")
            if state.compiled and state.graphs == "cold":
                state.cache.save_artifacts(state.graph)
        except OSError as error:  # a full or read-only cache disk never fails a finished job
            logger.warning("compile cache: could not record {} in {}: {}", state.graph, state.cache.folder, error)
    return state.to_report(None if warmup is None else round(warmup, 2))
