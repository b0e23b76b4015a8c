"""latentsync-bench times the user's run path: the same `run_clip` and `LipSyncPipeline` as
`latentsync-run`, so its stage timings are the job report's stages."""
from __future__ import annotations

import pytest

from latentsync import runner
from latentsync.bench import BenchmarkOptions, run_benchmark
from latentsync.pipeline.clips import ArrayClipSource, ArrayFrameSink
from latentsync.pipeline.lipsync import LipSyncPipeline
from latentsync.testing.pipeline_helpers import cli_job_report


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    """The job report `latentsync-run` writes for the quickstart clip (cut to 16 frames, one step)."""
    return cli_job_report(tmp_path_factory.mktemp("cli"), seconds=0.64)


@pytest.mark.slow  # a tiny real benchmark: about 30 s on a 2-core CPU
def test_the_benchmark_runs_the_cli_pipeline_and_reports_its_stages(tmp_path, monkeypatch, cli_report):
    clips, pipeline_calls = [], []
    real_run_clip, real_call = runner.run_clip, LipSyncPipeline.__call__

    def recording_run_clip(source, sink, plan, **kwargs):
        clips.append((source, sink, plan))
        return real_run_clip(source, sink, plan, **kwargs)

    def recording_call(pipeline, source, sink, **kwargs):
        pipeline_calls.append((pipeline.settings, source))
        return real_call(pipeline, source, sink, **kwargs)

    monkeypatch.setattr(runner, "run_clip", recording_run_clip)
    monkeypatch.setattr(LipSyncPipeline, "__call__", recording_call)
    options = BenchmarkOptions.tiny()
    report = run_benchmark("quick", cache_path=tmp_path / "benchmark.json", options=options)

    ok = [case for case in report.cases if case.status == "ok"]
    assert ok and len(ok) == len(report.cases)
    # every timed run went through run_clip, on an in-memory clip, into LipSyncPipeline.__call__
    runs_per_case = options.warmup + options.reps
    assert len(clips) == len(pipeline_calls) == runs_per_case * len(report.cases)
    assert all(isinstance(source, ArrayClipSource) and isinstance(sink, ArrayFrameSink) for source, sink, _ in clips)
    assert [source for _, source in pipeline_calls] == [source for source, _, _ in clips]
    # the pipeline ran each case's own settings (the timed runs; warm-ups only take fewer steps)
    ran = [settings.to_dict() for settings, _ in pipeline_calls]
    for case in report.cases:
        assert case.settings in ran
        assert sum(settings == case.settings for settings in ran) >= options.reps
    # the benchmark's stage timings are the job report's: the same stages the CLI reports
    for case in ok:
        assert set(case.stage_timings) == set(cli_report["timings"]), case.name
        assert case.stage_timings["gpu"] > 0 and case.stage_timings["load_models"] >= 0
        if options.reps == 1:  # the median of one timed run is that run's own GPU stage
            assert case.seconds_per_batch == pytest.approx(case.stage_timings["gpu"])
