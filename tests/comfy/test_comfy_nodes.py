"""The nodes end to end on the CPU: real face frames, random-small weights, two denoising steps."""
from __future__ import annotations

import json

import pytest
import torch

from latentsync.comfy.nodes import JOB_REPORT_HEADER, RUN_PLAN, LatentSync, LatentSyncAutoOptimize
from latentsync.pipeline.lipsync import LipSyncPipeline
from latentsync.errors import InvalidInputError

from comfy_fakes import FPS, N_FRAMES, InterruptProcessingException


def check_returns(node_class, returned):
    """A node's tuple matches its RETURN_TYPES, each value of the kind ComfyUI expects."""
    assert isinstance(returned, tuple) and len(returned) == len(node_class.RETURN_TYPES)
    assert len(node_class.RETURN_NAMES) == len(node_class.RETURN_TYPES)
    for kind, value in zip(node_class.RETURN_TYPES, returned):
        if kind == "IMAGE":
            assert isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.ndim == 4
            assert value.shape[-1] == 3 and 0.0 <= float(value.min()) and float(value.max()) <= 1.0
        elif kind == "AUDIO":
            assert set(value) == {"waveform", "sample_rate"} and value["waveform"].ndim == 3
        elif kind == "STRING":
            assert isinstance(value, str) and value
        elif kind == RUN_PLAN:
            assert isinstance(value, dict) and "settings" in value["plan"]
        else:  # pragma: no cover - a new output kind needs a check here
            raise AssertionError(kind)


class Spy:
    """Wraps LipSyncPipeline.__call__: records the settings each run got and its UNet statistics."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = LipSyncPipeline.__call__

        def spy(pipeline, source, sink, **kwargs):
            result = original(pipeline, source, sink, **kwargs)
            self.calls.append((pipeline.settings.to_dict(), dict(result.stats)))
            return result

        monkeypatch.setattr(LipSyncPipeline, "__call__", spy)


@pytest.fixture(scope="module")
def runs(comfy_module, images, audio):
    """Two real runs of the LatentSync node: on its own (quality preset), and fed a preview run plan."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy(monkeypatch)
        alone = LatentSync().lipsync(images, audio, FPS, quality_preset="quality", inference_steps=2, seed=3)
        payload, info = LatentSyncAutoOptimize().optimize(goal="preview", images=images, fps=FPS)
        planned = LatentSync().lipsync(images, audio, FPS, quality_preset="quality", inference_steps=2, seed=3,
                                       run_plan=payload)
    return dict(alone=alone, planned=planned, payload=payload, info=info, calls=spy.calls,
                bars=list(comfy_module.bars))


def test_lipsync_node_returns_its_types(runs, images, audio):
    frames, synced_audio, summary = runs["alone"]
    check_returns(LatentSync, runs["alone"])
    assert frames.shape == images.shape  # every frame back, at the source size
    rate = audio["sample_rate"]
    assert synced_audio["sample_rate"] == rate
    # the audio trimmed to the frames: here all of it (upstream's length runs past the audio's end)
    assert audio["waveform"].shape[-1] < round(N_FRAMES / FPS * rate)
    assert torch.equal(synced_audio["waveform"], audio["waveform"])
    # only the lower face is repainted: the top rows of the picture are untouched
    assert torch.equal((frames[:, :20] * 255).round(), (images[:, :20] * 255).round())
    assert not torch.equal(frames, images)
    assert "user override" in summary and "quality_preset quality" in summary


def test_progress_bar_reaches_the_end(runs):
    assert runs["bars"], "no ComfyUI progress bar was made"
    bar = runs["bars"][0]
    assert bar.total == N_FRAMES and bar.updates[-1] == (N_FRAMES, N_FRAMES)


def test_auto_optimize_run_plan_decides_what_runs(runs):
    (alone_settings, alone_stats), (planned_settings, planned_stats) = runs["calls"]
    plan = runs["payload"]["plan"]
    # the node's explicit steps and seed win; every other setting is the run plan's
    assert planned_settings == {**plan["settings"], "steps": 2, "seed": 3}
    assert planned_settings["deepcache"] is True and alone_settings["deepcache"] is False
    assert planned_settings["scheduler"] != alone_settings["scheduler"]  # preview: dpmpp, quality: ddim
    # DeepCache from the plan: the second step reuses cached features
    assert alone_stats["unet_calls"] == planned_stats["unet_calls"] == 2
    assert alone_stats["cached_calls"] == 0 and planned_stats["cached_calls"] == 1
    summary = runs["planned"][2]
    assert "from the connected run plan (LatentSync Auto-Optimize)" in summary
    assert "goal preview" in summary and "goals.preview" in summary
    check_returns(LatentSync, runs["planned"])
    check_returns(LatentSyncAutoOptimize, (runs["payload"], runs["info"]))
    assert "goal: preview -> preview" in runs["info"]


def test_cancel_between_chunks_raises_comfyuis_interrupt(comfy, images, audio):
    comfy.interrupted = True
    with pytest.raises(InterruptProcessingException):
        LatentSync().lipsync(images, audio, FPS, inference_steps=1)
    assert comfy.interrupted is False  # ComfyUI's flag is consumed, as its own nodes do


def test_bad_inputs_say_which_input(comfy, images, audio):
    with pytest.raises(InvalidInputError, match="fps"):
        LatentSync().lipsync(images, audio, 0.0)
    with pytest.raises(InvalidInputError, match="images"):
        LatentSync().lipsync(images[..., :2], audio, FPS)
    with pytest.raises(InvalidInputError, match="weights_path"):
        LatentSync().lipsync(images, audio, FPS, weights_path=str(comfy.models_dir / "nowhere"))
    with pytest.raises(InvalidInputError, match="run_plan"):
        LatentSync().lipsync(images, audio, FPS, run_plan={"settings": {}})


def job_report_of(summary: str) -> dict:
    """The job report at the end of the LatentSync node's `plan` output."""
    lines = summary.splitlines()
    assert JOB_REPORT_HEADER in lines, "the plan output carries no job report"
    start = lines.index(JOB_REPORT_HEADER) + 1
    return json.loads("\n".join(lines[start:]))


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    """A job report as `latentsync-run` writes it beside its output (quickstart clip, one step)."""
    from latentsync.testing.pipeline_helpers import cli_job_report

    from comfy_fakes import AUDIO_SAMPLES_16K

    return cli_job_report(tmp_path_factory.mktemp("cli"), seconds=AUDIO_SAMPLES_16K / 16000)


@pytest.mark.parametrize("run", ["alone", "planned"])
def test_plan_output_ends_with_the_job_report_the_cli_writes(runs, cli_report, run):
    from latentsync.engine import schema_errors
    from latentsync.paths import schemas_dir

    report = job_report_of(runs[run][2])
    required = json.loads((schemas_dir() / "job_report.schema.json").read_text())["required"]
    assert set(required) <= set(report)
    assert set(report) == set(cli_report)  # the same fields as latentsync-run's report
    assert schema_errors(report, "job_report") == [] and schema_errors(cli_report, "job_report") == []
    assert list(report["timings"]) == list(cli_report["timings"])  # the same stages, in the same order
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in report["timings"].values())
    # the report is this run's: its settings are those the pipeline ran with, its frames the node's
    settings, stats = runs["calls"][0 if run == "alone" else 1]
    assert report["status"] == "ok" and report["settings_applied"] == settings and report["stats"] == stats
    assert report["frames_total"] == len(runs[run][0]) and report["run_plan"]["settings"] == settings
    assert report["rules_hash"] == cli_report["rules_hash"]


def test_the_comfyui_smoke_script_reads_the_job_report_from_the_plan_output(runs):
    """scripts/comfyui_smoke.py checks the same in a real ComfyUI (its `job_report_in`)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "comfyui_smoke.py"
    spec = importlib.util.spec_from_file_location("comfyui_smoke", path)
    smoke = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_smoke"] = smoke  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(smoke)
        summary = runs["alone"][2]
        report, problem = smoke.job_report_in(summary)
        assert problem == "" and report == job_report_of(summary)
        assert smoke.job_report_in(summary.replace(JOB_REPORT_HEADER, "job report:"))[0] is None
        broken = summary[: summary.index(JOB_REPORT_HEADER)] + JOB_REPORT_HEADER + "\n" + json.dumps(
            {**report, "status": "finished"})
        assert "status" in smoke.job_report_in(broken)[1]
    finally:
        sys.modules.pop("comfyui_smoke", None)
