"""`evaluate: [sync]`: a job scores its input and output with StableSyncNet and its report keeps the scores."""
import json
from pathlib import Path

import pytest

from latentsync import runner
from latentsync.quality import jobs as quality_jobs
from latentsync.engine import load_plan_file, schema_errors
from latentsync.errors import CheckpointError, InvalidInputError
from latentsync.jobs import JobReport, JobSpec

ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"


def quick_spec(tmp_path, **kw):
    kw.setdefault("weights", "random-small")
    return JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "out.mp4", overrides={"steps": 1}, **kw)


@pytest.mark.slow
def test_quickstart_with_evaluate_sync_reports_input_and_output_scores(tmp_path):
    spec = quick_spec(tmp_path, evaluate=["sync"])
    report = runner.run_job(spec)
    data = json.loads((tmp_path / "out.mp4.report.json").read_text())
    assert schema_errors(data, "job_report") == []
    assert data["job"]["evaluate"] == ["sync"]
    sync = data["evaluation"]["sync"]
    assert sync["model"] == "random-small" and sync["random_weights"] is True
    for side in ("input", "output"):
        assert 0.0 <= sync[side]["sync_probability"] <= 1.0 and sync[side]["windows"] > 0
    assert sync["drop"]["confidence"] == pytest.approx(sync["input"]["confidence"] - sync["output"]["confidence"])
    assert data["timings"]["evaluate_sync"] >= sync["seconds"] > 0
    assert report.evaluation == data["evaluation"]
    # one scorer per process, like the models
    assert quality_jobs.sync_scorer("random-small", "cpu") is quality_jobs.sync_scorer("random-small", "cpu")


def test_a_job_without_evaluate_has_no_evaluation(tmp_path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", output=tmp_path / "out.mp4")
    assert spec.evaluate == [] and quality_jobs.check_evaluations(spec) is None
    data = JobReport(job=spec.to_dict(), status="ok", output=str(spec.output), run_plan={}).to_dict()
    assert "evaluation" not in data and data["job"]["evaluate"] == []


def test_weights_folder_without_the_syncnet_fails_before_any_work(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    worked = []
    monkeypatch.setattr(runner, "execute_plan", lambda *a, **k: worked.append(1))
    monkeypatch.setattr("latentsync.engine.gather_facts", lambda *a, **k: worked.append(1))
    with pytest.raises(CheckpointError) as caught:
        runner.run_job(quick_spec(tmp_path, weights=str(weights), evaluate=["sync"]))
    assert caught.value.exit_code == 2 and "stable_syncnet.pt" in str(caught.value)
    assert worked == [] and not (tmp_path / "out.mp4").exists()


def test_scorer_weights_for_random_weights_and_unknown_evaluations(tmp_path):
    assert quality_jobs.check_evaluations(quick_spec(tmp_path, evaluate=["sync"])) == "random-small"
    assert quality_jobs.check_evaluations(quick_spec(tmp_path, weights="random-1.5", evaluate=["sync"])) == "random"
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "stable_syncnet.pt").write_bytes(b"")
    assert quality_jobs.check_evaluations(quick_spec(tmp_path, weights=str(weights), evaluate=["sync"])) == str(weights)
    with pytest.raises(InvalidInputError, match="unknown evaluation"):
        quality_jobs.check_evaluations(quick_spec(tmp_path, evaluate=["lse"]))


def test_plan_files_carry_evaluate(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("defaults: {evaluate: [sync]}\njobs:\n  - {video: a.mp4, output: out/a.mp4}\n"
                    "  - {video: b.mp4, output: out/b.mp4, evaluate: []}\n")
    first, second = load_plan_file(plan)
    assert first.evaluate == ["sync"] and second.evaluate == []
    plan.write_text("video: a.mp4\noutput: out/a.mp4\nevaluate: [lse]\n")
    with pytest.raises(InvalidInputError, match="evaluate"):
        load_plan_file(plan)
