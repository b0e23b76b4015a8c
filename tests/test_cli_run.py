"""`latentsync-run`: plan mode, dry run, exit codes, error lines, progress, watch and fetch-weights.

The engine and the runner are replaced by fakes with their contracts' signatures,
so these tests pin the CLI's behaviour independently of the pipeline; one test
at the end runs the real engine on the bundled example when it is there.
"""
from __future__ import annotations

import io
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from latentsync import engine, runner
from latentsync.cli import run as cli
from latentsync.errors import InvalidInputError, MediaError
from latentsync.jobs import JobSpec
from latentsync.testing.fake_pipeline import FakePipeline, make_fake_audio, make_fake_video


@dataclass
class _RuleSet:
    version: str = "v1"
    hash: str = "f" * 64


@dataclass
class _Plan:
    job: JobSpec

    def explain_table(self) -> str:
        return f"setting  value  rule\nsteps    20     quality.default  ({Path(self.job.video).name})"

    def to_dict(self) -> dict:
        return {"steps": 20}


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    """Jobs from a fake plan loader; run_job is the fake pipeline. Returns (plan path, specs, calls)."""
    specs = []
    for index in range(2):
        video = make_fake_video(tmp_path / f"clip{index}.mp4", seed=index)
        audio = make_fake_audio(tmp_path / f"clip{index}.wav", seed=index)
        specs.append(JobSpec(video=video, audio=audio, output=tmp_path / "out" / f"clip{index}.mp4", name=f"clip{index}"))
    plan = tmp_path / "plan.yaml"
    plan.write_text("# jobs come from the fake loader\n")
    calls: dict[str, list] = {"run": [], "rules": [], "facts": []}
    pipeline = FakePipeline()

    def load_ruleset(path=None):
        calls["rules"].append(path)
        return _RuleSet()

    def run_job(spec, **kwargs):
        calls["run"].append(spec)
        return pipeline(spec, **kwargs)

    monkeypatch.setattr(engine, "load_ruleset", load_ruleset, raising=False)
    monkeypatch.setattr(engine, "load_plan_file", lambda path: [JobSpec(**vars(s)) for s in specs], raising=False)
    monkeypatch.setattr(engine, "gather_facts", lambda job, ruleset, benchmark_cache=None: calls["facts"].append(job) or {},
                        raising=False)
    monkeypatch.setattr(engine, "resolve_plan", lambda job, facts, ruleset: _Plan(job), raising=False)
    monkeypatch.setattr(runner, "run_job", run_job)
    return plan, specs, calls


def test_help_documents_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for words in ("PLAN.yaml", "watch INBOX --out OUTBOX", "fetch-weights DIR", "exit codes", "0 ", "1 ", "2 ",
                  "invalid input"):
        assert words in text
    with pytest.raises(SystemExit):
        cli.main(["watch", "--help"])
    watch_help = capsys.readouterr().out
    assert "--poll" in watch_help and "--retries" in watch_help and "--once" in watch_help and "exit codes" in watch_help


def test_no_arguments_prints_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "latentsync-run" in capsys.readouterr().err


def test_run_plan_runs_every_job_and_writes_reports(fake_engine, capsys):
    plan, specs, calls = fake_engine
    assert cli.main([str(plan), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert [r["rules_hash"] for r in results] == [_RuleSet().hash] * 2
    for spec in specs:
        assert Path(spec.output).is_file()
        assert json.loads(Path(str(spec.output) + ".report.json").read_text())["rules_version"] == "v1"
    assert len(calls["run"]) == 2 and calls["rules"] == [None]


def test_rules_folder_and_contact_sheet_reach_the_engine(fake_engine, tmp_path):
    plan, _specs, calls = fake_engine
    assert cli.main([str(plan), "--rules", str(tmp_path), "--contact-sheet"]) == 0
    assert calls["rules"] == [tmp_path]
    assert all(spec.contact_sheet for spec in calls["run"])


def test_dry_run_prints_explained_plan_and_runs_nothing(fake_engine, capsys):
    plan, _specs, calls = fake_engine
    assert cli.main([str(plan), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "quality.default" in text and "clip0.mp4" in text and "clip1.mp4" in text and "rules v1" in text
    assert calls["run"] == [] and len(calls["facts"]) == 2
    assert cli.main([str(plan), "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["run_plan"] == {"steps": 20} and data[0]["rules_hash"] == _RuleSet().hash


def test_invalid_plan_is_one_clear_line_and_exit_2(fake_engine, monkeypatch, capsys):
    plan, _specs, calls = fake_engine

    def bad_plan(path):
        raise InvalidInputError("jobs[0].goal: 'fastest' is not one of preview, balanced, quality, auto",
                                path=str(path), hint="use goal: preview")

    monkeypatch.setattr(engine, "load_plan_file", bad_plan, raising=False)
    assert cli.main([str(plan)]) == 2
    err = capsys.readouterr().err
    assert f"error: {plan}: jobs[0].goal" in err and "hint: use goal: preview" in err
    assert "Traceback" not in err and calls["run"] == []
    assert cli.main([str(plan), "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_failed_job_exits_1_and_the_others_still_run(fake_engine, monkeypatch, capsys):
    plan, specs, calls = fake_engine
    pipeline = FakePipeline()

    def flaky(spec, **kwargs):
        calls["run"].append(spec)
        if spec.name == "clip0":
            raise RuntimeError("CUDA error: an illegal memory access")
        return pipeline(spec, **kwargs)

    monkeypatch.setattr(runner, "run_job", flaky)
    assert cli.main([str(plan)]) == 1
    captured = capsys.readouterr()
    assert "error: RuntimeError: CUDA error" in captured.err and "--verbose" in captured.err
    assert "failed  clip0" in captured.out and "ok      clip1" in captured.out
    assert Path(specs[1].output).is_file()


def test_bad_media_in_a_job_exits_2(fake_engine, monkeypatch, capsys):
    plan, _specs, _calls = fake_engine

    def bad_media(spec, **kwargs):
        raise MediaError("video has no frames", path=str(spec.video), hint="re-export the clip")

    monkeypatch.setattr(runner, "run_job", bad_media)
    assert cli.main([str(plan)]) == 2
    assert "video has no frames" in capsys.readouterr().err


def test_progress_bar_per_stage_with_chunks():
    stream = io.StringIO()
    progress = cli.TqdmProgress("clip", file=stream, disable=False)
    for done in range(1, 4):
        progress("encode", done, 3)
    for done in range(1, 6):
        progress("denoise", done, 5)
    progress.close()
    text = stream.getvalue()
    assert progress.stages_seen == ["encode", "denoise"]
    assert "clip encode" in text and "clip denoise" in text and "5/5" in text and "chunk" in text


def test_watch_once_through_the_cli(tmp_path, capsys):
    inbox, outbox, rules = tmp_path / "in", tmp_path / "out", tmp_path / "rules"
    inbox.mkdir()
    rules.mkdir()
    (rules / "base.yaml").write_text("schema_version: 1\nversion: v1\n")
    make_fake_video(inbox / "good.mp4")
    common = ["watch", str(inbox), "--out", str(outbox), "--rules", str(rules), "--once", "--settle", "0.05",
              "--executor", "latentsync.testing.fake_pipeline:FakePipeline()",
              "--rules-loader", "latentsync.testing.fake_pipeline:fake_load_ruleset"]
    assert cli.main(common) == 0
    assert (outbox / "good.mp4").is_file() and (inbox / "done" / "good.mp4").is_file()
    (inbox / "bad.mp4").write_bytes(b"not a video at all")
    assert cli.main(common) == 1, "--once reports a job that ended in failed/"
    assert (inbox / "failed" / "bad.error.json").is_file()


def test_watch_refuses_a_missing_inbox_with_exit_2(tmp_path, capsys):
    code = cli.main(["watch", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--once",
                     "--rules-loader", "latentsync.testing.fake_pipeline:fake_load_ruleset"])
    assert code == 2
    err = capsys.readouterr().err
    assert "INBOX is not a folder" in err and str(tmp_path / "nope") in err and "Traceback" not in err


def test_watch_bad_executor_reference_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    code = cli.main(["watch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--once",
                     "--executor", "no.such.module:run"])
    assert code == 2 and "--executor" in capsys.readouterr().err


def test_fetch_weights_calls_the_weights_module_lazily(monkeypatch, tmp_path, capsys):
    seen = []
    module = types.ModuleType("latentsync.weights")
    module.fetch_weights = lambda dest: seen.append(dest)
    monkeypatch.setitem(sys.modules, "latentsync.weights", module)
    assert cli.main(["fetch-weights", str(tmp_path / "w")]) == 0
    assert seen == [tmp_path / "w"]

    def offline(dest):
        raise InvalidInputError("cannot reach huggingface.co", path=str(dest), hint="download on a machine with internet")

    module.fetch_weights = offline
    assert cli.main(["fetch-weights", str(tmp_path / "w")]) == 2
    assert "cannot reach huggingface.co" in capsys.readouterr().err


def _engine_ready() -> bool:
    try:
        from latentsync.engine import load_plan_file, load_ruleset  # noqa: F401

        load_ruleset(None)
    except (ImportError, NotImplementedError):
        return False
    return True


def test_dry_run_with_the_real_engine_on_the_bundled_example(capsys):
    from latentsync.paths import examples_dir

    plan = examples_dir() / "plan.yaml"
    if not plan.is_file() or not _engine_ready():
        pytest.skip("the rules engine or examples/plan.yaml is not there yet")
    code = cli.main([str(plan), "--dry-run", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data and data[0]["rules_hash"] and data[0]["run_plan"]
