"""`latentsync-run batch` prints the sync scores of the clips when a job asked for them (`evaluate: [sync]`).

Ray is stood in for: the CLI's batch command runs with a `run_batch` that calls the fake pipeline on
each clip in this process and puts a real `SyncEvaluation.to_report()` into the reports of the jobs that
asked for one (as `execute_plan` does)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentsync.cli.run import main
from latentsync.distributed import batch as batch_module
from latentsync.quality import SyncScorer
from latentsync.quality.report import SyncEvaluation, report_sync_rows, sync_table
from latentsync.testing.fake_pipeline import make_fake_audio, make_fake_video


@pytest.fixture(scope="module")
def evaluation() -> SyncEvaluation:
    scorer = SyncScorer.from_weights("random-small", seed=1)
    rng = np.random.default_rng(5)
    crops = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    samples = (0.2 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    score = scorer.score_crops(crops, samples, stride=4)
    return SyncEvaluation(output=score, input=score, seconds=1.25)


def _plan(tmp_path: Path, evaluate: bool) -> Path:
    for name in ("a", "b"):
        make_fake_video(tmp_path / f"{name}.mp4", seed=1 if name == "a" else 2)
        make_fake_audio(tmp_path / f"{name}.wav", seed=1 if name == "a" else 2)
    extra = ", evaluate: [sync]" if evaluate else ""
    plan = tmp_path / "plan.yaml"
    plan.write_text("jobs:\n"
                    f"  - {{name: a, video: a.mp4, audio: a.wav, output: out/a.mp4{extra}}}\n"
                    "  - {name: b, video: b.mp4, audio: b.wav, output: out/b.mp4}\n")
    return plan


def _local_batch(evaluation: SyncEvaluation):
    def run_batch(specs, *, executor=None, **_kwargs):
        clips = []
        for spec in specs:
            data = executor(spec).to_dict()
            if "sync" in spec.evaluate:
                data["evaluation"] = {"sync": evaluation.to_report()}
            assert data["job"]["evaluate"] == list(spec.evaluate)
            clips.append(batch_module.ClipResult(name=spec.name, output=str(spec.output), status="ok", report=data))
        return batch_module.BatchResult(clips=clips, seconds=1.0, resources={})

    return run_batch


@pytest.mark.parametrize("evaluate", [True, False])
def test_batch_prints_the_sync_table_when_a_job_asked(tmp_path, monkeypatch, capsys, evaluation, evaluate):
    monkeypatch.setattr("latentsync.distributed.require_ray", lambda: None)
    monkeypatch.setattr(batch_module, "run_batch", _local_batch(evaluation))
    code = main(["batch", str(_plan(tmp_path, evaluate)), "--ray",
                 "--executor", "latentsync.testing.fake_pipeline:FakePipeline()"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0 and "2/2 clips" in out, captured.err[-2000:]
    if not evaluate:
        assert "sync scores" not in out
        return
    table = out.split("sync scores", 1)[1].splitlines()[1:]
    assert table[0].split()[:3] == ["job", "in", "p"]
    score = evaluation.output
    assert table[1].startswith("a (random weights)")
    assert f"{score.sync_probability:.3f}" in table[1] and f"{score.best_offset:+d}" in table[1]
    assert table[2].split() == ["b"] + ["-"] * 6  # asked for nothing: dashes


def test_table_from_report_entries_matches_the_table_from_evaluations(evaluation):
    reports = [("a", {"evaluation": {"sync": evaluation.to_report()}}), ("b", {"status": "ok"}), ("c", None)]
    rows = report_sync_rows(reports)
    assert rows[1] == ("b", None) and rows[2] == ("c", None)
    assert sync_table(rows) == sync_table([("a", evaluation), ("b", None), ("c", None)])
