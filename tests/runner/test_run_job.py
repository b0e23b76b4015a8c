"""run_job: rules -> plan -> pipeline -> atomic report; the out-of-memory ladder."""
import json
from pathlib import Path

import pytest
import torch

from latentsync import runner
from latentsync.engine import load_ruleset, schema_errors
from latentsync.errors import InvalidInputError, OutOfMemoryError
from latentsync.jobs import JobSpec
from latentsync.testing.pipeline_helpers import default_settings

ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"


def quick_spec(tmp_path, **kw):
    return JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "out.mp4", weights="random-small", overrides={"steps": 1}, **kw)


def test_run_job_writes_output_and_a_valid_report(tmp_path):
    spec = quick_spec(tmp_path)
    report = runner.run_job(spec)
    assert report.status == "ok" and Path(report.output).is_file()
    data = json.loads((tmp_path / "out.mp4.report.json").read_text())
    assert schema_errors(data, "job_report") == []
    assert data["settings_applied"]["steps"] == 1
    assert data["run_plan"]["sources"]["steps"]["override"] is True
    assert data["rules_hash"] == load_ruleset().hash
    assert data["stats"]["unet_calls"] > 0
    # model loading is timed by the run path (run_clip), beside the pipeline's own stages
    assert data["timings"]["load_models"] >= 0 and data["timings"]["gpu"] > 0


def fake_pipelines(seen, fail_first):
    """A stand-in for runner.build_pipeline: records each attempt's settings; the first
    `fail_first` attempts run out of device memory."""

    def build(weights, settings):
        def pipeline(source, sink, **kw):
            seen.append(settings.to_dict())
            if len(seen) <= fail_first:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return runner.PipelineResult(frames_total=75, video_seconds=3.0, timings={}, frames_without_face=[],
                                         peak_vram_gib=None, device="cpu")

        return pipeline

    return build


def test_out_of_memory_steps_down_the_ladder(tmp_path, monkeypatch):
    seen = []

    class Plan:
        settings = default_settings(frames_per_batch=64, vae_tiling=False)
        fallbacks = [{"rule": "oom.1", "set": {"frames_per_batch": 32}},
                     {"rule": "oom.2", "set": {"vae_tiling": True, "frames_per_batch": 16}}]
        rules_version, rules_hash, notes = "v1", "x" * 64, []

        def to_dict(self):
            return {}

    monkeypatch.setattr(runner, "build_pipeline", fake_pipelines(seen, fail_first=2))
    report = runner.execute_plan(quick_spec(tmp_path), Plan())
    assert [s["frames_per_batch"] for s in seen] == [64, 32, 16]
    assert seen[1]["vae_tiling"] is False and seen[2]["vae_tiling"] is True
    assert report.settings_applied == {**Plan.settings.to_dict(), "frames_per_batch": 16, "vae_tiling": True}
    assert report.fallbacks_applied == Plan.fallbacks
    assert sum("out of memory" in w for w in report.warnings) == 2
    written = json.loads((tmp_path / "out.mp4.report.json").read_text())
    assert written["settings_applied"] == report.settings_applied


def test_out_of_memory_with_no_fallback_left_is_a_clear_error(tmp_path, monkeypatch):
    seen = []

    class Plan:
        settings, fallbacks, rules_version, rules_hash, notes = default_settings(), [], "v1", "x", []

        def to_dict(self):
            return {}

    monkeypatch.setattr(runner, "build_pipeline", fake_pipelines(seen, fail_first=99))
    with pytest.raises(OutOfMemoryError, match="no fallback left"):
        runner.execute_plan(quick_spec(tmp_path), Plan())
    assert len(seen) == 1
    assert not (tmp_path / "out.mp4.report.json").exists()


def test_output_over_the_input_is_refused_before_any_work(tmp_path):
    import shutil

    video = tmp_path / "clip.mp4"
    shutil.copy(ASSETS / "quickstart.mp4", video)
    before = video.read_bytes()
    spec = JobSpec(video=video, audio=ASSETS / "quickstart_speech.wav", output=video, weights="random-small")
    with pytest.raises(InvalidInputError, match="overwrite an input"):
        runner.run_job(spec)
    assert video.read_bytes() == before


def test_missing_weights_folder_is_a_clear_error(tmp_path):
    from latentsync.errors import CheckpointError

    spec = quick_spec(tmp_path)
    spec.weights = str(tmp_path / "no-such-weights")
    with pytest.raises(CheckpointError, match="weights folder not found"):
        runner.run_job(spec)
    assert not (tmp_path / "out.mp4").exists()
