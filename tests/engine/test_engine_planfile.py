"""plan.yaml loading: one job or many, relative paths, every error naming file, line and field."""
from __future__ import annotations

import pytest
from engine_helpers import write

from latentsync.engine import PlanError, load_plan_file
from latentsync.errors import InvalidInputError


def test_single_job_with_relative_paths(tmp_path):
    plan = write(tmp_path / "plans" / "one.yaml", """
        video: ../media/clip.mp4
        audio: voice.wav
        output: out/clip.mp4
        weights: ../weights
        goal: quality
        overrides: {steps: 25}
        assume: {gpu: rtx4060-8gb, duration: 30}
        seed: 7
    """)
    before = plan.read_bytes()
    [spec] = load_plan_file(plan)
    assert spec.video == (tmp_path / "media" / "clip.mp4") and spec.audio == tmp_path / "plans" / "voice.wav"
    assert spec.output == tmp_path / "plans" / "out" / "clip.mp4" and spec.weights == str(tmp_path / "weights")
    assert (spec.goal, spec.overrides, spec.assume, spec.seed) == ("quality", {"steps": 25},
                                                                   {"gpu": "rtx4060-8gb", "duration": 30}, 7)
    assert plan.read_bytes() == before


def test_jobs_with_defaults(tmp_path):
    plan = write(tmp_path / "many.yaml", """
        defaults:
          weights: random-small
          goal: preview
          overrides: {steps: 5}
        jobs:
          - {video: a.mp4, output: a.out.mp4}
          - {video: b.mp4, output: b.out.mp4, goal: quality, overrides: {seed: 3}}
    """)
    first, second = load_plan_file(plan)
    assert first.weights == "random-small" and first.goal == "preview" and first.overrides == {"steps": 5}
    assert second.goal == "quality" and second.overrides == {"steps": 5, "seed": 3}


@pytest.mark.parametrize("text, field, line, words", [
    ("video: a.mp4\noutput: b.mp4\ngoal: fastest\n", "goal", 3, "is not one of"),
    ("video: a.mp4\noutput: b.mp4\nspeed: turbo\n", None, 1, "unknown field 'speed'"),
    ("video: a.mp4\n", None, 1, "'output' is missing"),
    ("video: a.mp4\noutput: b.mp4\noverrides: {steps: many}\n", "overrides.steps", 3, "wrong type"),
    ("video: a.mp4\noutput: b.mp4\noverrides: {stepz: 3}\n", "overrides", 3, "unknown field 'stepz'"),
    ("video: a.mp4\noutput: b.mp4\nassume: {gpu: 4090, duration: -3}\n", "assume.duration", 3, "minimum"),
    ("jobs:\n  - {video: a.mp4, output: same.mp4}\n  - {video: b.mp4, output: same.mp4}\n", "jobs[1].output", 3,
     "also the output of jobs[0].output"),
    ("jobs:\n  - {video: a.mp4}\n", "jobs[0].output", 2, "'output' is missing"),
    ("video: a.mp4\noutput: a.mp4\n", "output", 2, "overwrite an input, the video"),
    ("video: a.mp4\noutput: b.mp4\nreport: plan.yaml\n", "report", 3, "overwrite an input, the plan"),
    ("video: a.mp4\noutput: b.mp4\nreport: a.mp4\n", "report", 3, "overwrite an input, the video"),
    ("video: a.mp4\noutput: b.mp4\nreport: b.mp4\n", "report", 3, "are the same file"),
    ("jobs:\n  - {video: a.mp4, output: b.mp4}\n  - {video: b.mp4, output: c.mp4}\n", "jobs[0].output", 2,
     "is also the video of jobs[1]"),
    ("video: a.mp4\noutput: b.mp4\noverrides: {guidance_scale: .nan}\n", "overrides.guidance_scale", 3, "not a finite number"),
    ("video: a.mp4\noutput: b.mp4\nassume: {duration: .inf}\n", "assume.duration", 3, "not a finite number"),
    ("video: a.mp4\noutput: b.mp4\noverrides: {guidance_scale: 1.0e+999}\n", "overrides.guidance_scale", 3, "not a finite number"),
    ("video: [a.mp4\n", None, 2, "invalid YAML"),
    ("video: a.mp4\noutput: b.mp4\nvideo: c.mp4\n", "video", 3, "duplicate key"),
])
def test_bad_plans_name_file_line_and_field(tmp_path, text, field, line, words):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    with pytest.raises(PlanError) as caught:
        load_plan_file(plan)
    error = caught.value
    assert isinstance(error, InvalidInputError) and error.exit_code == 2
    problem = error.problems[0]
    assert problem.file == str(plan) and problem.field == field and problem.line == line, problem
    assert words in problem.message
    assert str(plan) in str(error)


def test_missing_plan_file(tmp_path):
    with pytest.raises(PlanError, match="plan file not found"):
        load_plan_file(tmp_path / "nope.yaml")
