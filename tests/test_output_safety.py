"""Outputs never overwrite inputs: the video output and the report may not be (or lead to) the plan,
the video, the audio, the weights or an existing file the job did not write, in the CLI, the plan
loader and on Ray; the error names both paths and the inputs stay byte-identical."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from latentsync.cli.run import main as run_cli
from latentsync.engine import PlanError, load_plan_file
from latentsync.errors import InvalidInputError
from latentsync.jobs import JobSpec
from latentsync.output_safety import OutputConflict, check_outputs
from latentsync.testing.fake_pipeline import make_fake_audio, make_fake_video, sha256_file


@pytest.fixture
def clip(tmp_path):
    video = make_fake_video(tmp_path / "clip.mp4")
    audio = make_fake_audio(tmp_path / "voice.wav")
    return tmp_path, video, audio


def spec(folder: Path, **fields) -> JobSpec:
    fields.setdefault("video", folder / "clip.mp4")
    fields.setdefault("audio", folder / "voice.wav")
    fields.setdefault("output", folder / "out.mp4")
    return JobSpec(**fields)


@pytest.mark.parametrize("field, target", [("report", "plan.yaml"), ("report", "clip.mp4"), ("report", "voice.wav"),
                                           ("output", "clip.mp4"), ("report", "out.mp4")])
def test_a_plan_naming_an_input_as_output_or_report_is_refused_by_the_cli(clip, capsys, field, target):
    folder, video, audio = clip
    plan = folder / "plan.yaml"
    other = "report: r.json\n" if field == "output" else "output: out.mp4\n"
    plan.write_text(f"video: clip.mp4\naudio: voice.wav\n{other}{field}: {target}\nweights: random-small\n")
    before = {p: sha256_file(p) for p in (plan, video, audio)}
    assert run_cli([str(plan)]) == 2
    err = capsys.readouterr().err
    assert str(folder / target) in err and "Traceback" not in err
    assert {p: sha256_file(p) for p in before} == before, "the inputs are byte-identical"
    assert not (folder / "out.mp4").exists()


def test_hard_and_symbolic_links_to_inputs_are_seen_through(clip):
    folder, video, audio = clip
    os.link(video, folder / "hard.mp4")
    os.symlink(audio, folder / "soft.json")
    with pytest.raises(OutputConflict, match="overwrite an input, the video") as caught:
        check_outputs(spec(folder, output=folder / "hard.mp4"))
    assert caught.value.output == str(folder / "hard.mp4") and caught.value.other == str(video)
    with pytest.raises(OutputConflict, match="overwrite an input, the audio"):
        check_outputs(spec(folder, report=folder / "soft.json"))
    with pytest.raises(OutputConflict, match="overwrite an input, the plan"):
        check_outputs(spec(folder, report=folder / "sub" / ".." / "plan.yaml"), plan_file=folder / "plan.yaml")


def test_outputs_stay_out_of_the_weights(clip):
    folder, _, _ = clip
    weights = folder / "weights"
    weights.mkdir()
    with pytest.raises(OutputConflict, match="written into the weights"):
        check_outputs(spec(folder, output=weights / "out.mp4", weights=str(weights)))


def test_an_existing_file_is_replaced_only_when_this_job_wrote_it_or_overwrite_says_so(clip):
    folder, _, _ = clip
    output = folder / "out.mp4"
    output.write_bytes(b"someone else's video")
    with pytest.raises(OutputConflict, match="would replace an existing file that this job did not write") as caught:
        check_outputs(spec(folder))
    assert isinstance(caught.value, InvalidInputError) and caught.value.exit_code == 2
    check_outputs(spec(folder, overwrite=True))  # the user said so
    check_outputs(spec(folder), overwrite=True)
    # An earlier run of this same job: its report names this output, so both may be replaced.
    (folder / "out.mp4.report.json").write_text(json.dumps({"output": str(output), "job": {"output": str(output)}}))
    check_outputs(spec(folder))
    # A report of some other job does not make the file ours.
    (folder / "out.mp4.report.json").write_text(json.dumps({"output": str(folder / "elsewhere.mp4")}))
    with pytest.raises(OutputConflict):
        check_outputs(spec(folder))
    # Overwrite never extends to inputs.
    with pytest.raises(OutputConflict, match="overwrite an input"):
        check_outputs(spec(folder, report=folder / "clip.mp4", overwrite=True))


def test_plan_loader_refuses_jobs_writing_over_each_others_inputs(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("jobs:\n  - {video: a.mp4, output: b.mp4}\n  - {video: c.mp4, output: d.mp4, report: b.mp4}\n")
    with pytest.raises(PlanError, match="jobs\\[1\\]") as caught:
        load_plan_file(plan)
    assert str(tmp_path / "b.mp4") in str(caught.value)


def test_ray_task_refuses_before_running(clip):
    from latentsync.distributed import tasks

    folder, video, _ = clip
    (folder / "out.mp4").write_bytes(b"not ours")
    calls = []
    result = tasks.run_clip("k", spec(folder).to_dict(), None, lambda *a, **k: calls.append(a))
    assert result["status"] == "failed" and result["error"]["type"] == "OutputConflict" and calls == []
    assert (folder / "out.mp4").read_bytes() == b"not ours"


@pytest.mark.parametrize("field", ["report", "output"])
def test_run_job_refuses_an_output_over_an_input_before_any_work(clip, monkeypatch, field):
    """The library entry point (what ComfyUI-side callers and scripts use) checks too, not only the CLI."""
    from latentsync import runner

    folder, video, audio = clip
    before = sha256_file(video)
    monkeypatch.setattr(runner, "run_clip", lambda *a, **k: pytest.fail("no work may start"))
    job = spec(folder, **{field: video}) if field == "report" else spec(folder, output=video)
    with pytest.raises(InvalidInputError) as caught:
        runner.run_job(job)
    assert str(video) in str(caught.value)
    assert sha256_file(video) == before
