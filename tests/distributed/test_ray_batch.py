"""A local CPU Ray cluster runs batches and the drop folder; crashes are retried, nothing runs twice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentsync.cli.run import main
from latentsync.distributed.batch import run_batch
from latentsync.jobs import JobSpec
from latentsync.testing.crash_pipeline import CrashOncePipeline
from latentsync.testing.fake_pipeline import expected_fake_output, make_fake_audio, make_fake_video


def _clips(folder: Path, count: int) -> list[JobSpec]:
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for index in range(count):
        video = make_fake_video(folder / f"clip{index}.mp4", seed=index)
        audio = make_fake_audio(folder / f"clip{index}.wav", seed=index)
        specs.append(JobSpec(video=video, audio=audio, output=folder / "out" / f"clip{index}.mp4"))
    return specs


def _attempts(markers: Path) -> dict[str, int]:
    return {p.name.split(".")[0]: len(p.read_text().splitlines()) for p in markers.iterdir()}


def test_batch_survives_a_killed_worker_and_fails_a_hopeless_clip(ray_cluster, tmp_path: Path):
    specs = _clips(tmp_path / "clips", 5)
    markers = tmp_path / "markers"
    markers.mkdir()
    inputs_before = {p: p.read_bytes() for p in (tmp_path / "clips").iterdir() if p.is_file()}
    pipeline = CrashOncePipeline(markers, crash=["clip1"], always_fail=["clip3"])

    result = run_batch(specs, executor=pipeline, max_retries=2, show_progress=False)

    by_name = {c.name: c for c in result.clips}
    assert sorted(by_name) == [f"clip{i}" for i in range(5)]  # every clip reported exactly once
    assert {n for n, c in by_name.items() if c.status == "ok"} == {"clip0", "clip1", "clip2", "clip4"}
    # The crashed clip ran twice (the kill, then the retry); the others once; the hopeless one 1 + 2 retries.
    assert _attempts(markers) == {"clip0": 1, "clip1": 2, "clip2": 1, "clip3": 3, "clip4": 1}
    for spec in specs:
        if spec.video.stem == "clip3":
            assert not spec.output.exists()
            continue
        assert spec.output.read_bytes() == expected_fake_output(spec.video, spec.audio)
        report = json.loads(Path(str(spec.output) + ".report.json").read_text())
        assert report["stats"]["ray"]["node_id"] == by_name[spec.video.stem].placement["node_id"]
        assert report["host"]
    failed = by_name["clip3"]
    error = json.loads(Path(failed.error_file).read_text())
    assert Path(failed.error_file).parent == tmp_path / "clips" / "out" / "failed"
    assert "simulated device failure" in error["why"] and error["error"]["attempts"] == 3
    assert result.exit_code == 1
    assert {p: p.read_bytes() for p in inputs_before} == inputs_before  # inputs untouched, none moved


def test_invalid_input_is_not_retried(ray_cluster, tmp_path: Path):
    specs = _clips(tmp_path / "clips", 2)
    specs[1].video.write_bytes(b"not a video at all")
    markers = tmp_path / "markers"
    markers.mkdir()
    result = run_batch(specs, executor=CrashOncePipeline(markers), max_retries=2, show_progress=False,
                       failed_dir=tmp_path / "failed")
    assert [c.status for c in result.clips] == ["ok", "failed"]
    assert _attempts(markers) == {"clip0": 1, "clip1": 1}
    assert result.exit_code == 2
    error = json.loads((tmp_path / "failed" / "clip1.error.json").read_text())
    assert error["error"]["type"] == "MediaError" and "container header" in error["why"]


def test_duplicate_outputs_are_refused_before_anything_runs(ray_cluster, tmp_path: Path):
    specs = _clips(tmp_path / "clips", 2)
    specs[1].output = specs[0].output
    from latentsync.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="same output"):
        run_batch(specs, executor=CrashOncePipeline(tmp_path), show_progress=False)


def test_cli_batch_runs_plans_on_ray(ray_cluster, tmp_path: Path, capsys):
    plans = []
    for index in range(3):
        make_fake_video(tmp_path / f"c{index}.mp4", seed=index)
        make_fake_audio(tmp_path / f"c{index}.wav", seed=index)
        plan = tmp_path / f"c{index}.plan.yaml"
        plan.write_text(f"video: c{index}.mp4\naudio: c{index}.wav\noutput: out/c{index}.mp4\n")
        plans.append(str(plan))
    code = main(["batch", *plans, "--ray", "--json", "--executor", "latentsync.testing.fake_pipeline:FakePipeline()"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] == 3 and result["failed"] == 0
    for index in range(3):
        assert (tmp_path / "out" / f"c{index}.mp4").read_bytes() == expected_fake_output(
            tmp_path / f"c{index}.mp4", tmp_path / f"c{index}.wav")


def test_watch_on_ray_journal_decides_retries_and_nothing_runs_twice(ray_cluster, tmp_path: Path):
    from latentsync.distributed.watch import RayWatcher
    from latentsync.watch import Journal, WatchConfig

    inbox, outbox, markers = tmp_path / "in", tmp_path / "out", tmp_path / "markers"
    inbox.mkdir()
    markers.mkdir()
    for index in range(4):
        make_fake_video(inbox / f"c{index}.mp4", seed=index)
        make_fake_audio(inbox / f"c{index}.wav", seed=index)
    expected = {f"c{i}": expected_fake_output(inbox / f"c{i}.mp4", inbox / f"c{i}.wav") for i in range(4)}
    config = WatchConfig(inbox=inbox, outbox=outbox, retries=2, retry_delay=0.05, settle=0.05, pair_wait=0,
                         log_file=False)
    watcher = RayWatcher(config, executor=CrashOncePipeline(markers, crash=["c1"], always_fail=["c3"]))
    summary = watcher.run(once=True)

    assert (summary.done, summary.failed) == (3, 1)
    assert _attempts(markers) == {"c0": 1, "c1": 2, "c2": 1, "c3": 3}
    for name in ("c0", "c1", "c2"):
        assert (outbox / f"{name}.mp4").read_bytes() == expected[name]
        report = json.loads((outbox / f"{name}.mp4.report.json").read_text())
        assert report["stats"]["ray"]["node_id"]
        assert report["job"]["video"] == str(inbox / "done" / f"{name}.mp4")
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["c3.error.json", "c3.mp4", "c3.wav"]
    assert not any((outbox / ".staging").iterdir())
    journal = Journal(inbox / ".latentsync" / "journal.sqlite3")
    try:
        rows = journal.jobs()
        assert sorted((r.name, r.state, r.attempts) for r in rows) == [
            ("c0", "done", 1), ("c1", "done", 2), ("c2", "done", 1), ("c3", "failed", 3)]
    finally:
        journal.close()


ASSETS = Path(__file__).resolve().parents[2] / "examples" / "assets"


@pytest.mark.slow
def test_real_small_pipeline_on_ray(ray_cluster, tmp_path: Path):
    spec = JobSpec(video=ASSETS / "quickstart.mp4", audio=ASSETS / "quickstart_speech.wav",
                   output=tmp_path / "synced.mp4", weights="random-small", overrides={"steps": 1})
    result = run_batch([spec], show_progress=False, max_retries=0)
    (clip,) = result.clips
    assert clip.status == "ok", clip.error
    assert spec.output.stat().st_size > 1000
    report = json.loads((tmp_path / "synced.mp4.report.json").read_text())
    assert report["status"] == "ok" and report["frames_total"] > 0
    assert report["stats"]["ray"]["node_id"] == clip.placement["node_id"]
    assert report["rules_version"] == "v1" and report["settings_applied"]["steps"] == 1
