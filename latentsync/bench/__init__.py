"""latentsync-bench as a library: time the real pipeline stages of the plans the rules pick on this
machine, write the benchmark cache the engine reads, and say what auto now recommends.

    from latentsync.bench import run_benchmark
    report = run_benchmark("quick")        # or "full", "stress"; clear=, cache_path=, weights=, progress=
    summary = report.summary               # one screen; report.text is the full report
    report.entry, report.cache_path        # the cache entry written (None when nothing fitted)

    from latentsync.bench import run_quality_benchmark
    report = run_quality_benchmark("clip.mp4", weights="WEIGHTS_DIR")  # --quality: each goal's lip-sync drop

Importing this package imports torch (the measurements need it); `latentsync` itself stays light.
"""
from .core import (MODES, BenchmarkOptions, BenchmarkReport, CaseResult, StressStep, SummaryRow, cache_problem,
                   clear_cached_results, run_benchmark)
from .plot import write_plot
from .quality import GoalQuality, QualityReport, run_quality_benchmark

__all__ = ["BenchmarkOptions", "BenchmarkReport", "CaseResult", "GoalQuality", "MODES", "QualityReport",
           "StressStep", "SummaryRow", "cache_problem", "clear_cached_results", "run_benchmark",
           "run_quality_benchmark", "write_plot"]
