"""The nodes end to end on the CPU: real face frames, random-small weights, two denoising steps."""
from __future__ import annotations

import pytest
import torch

import latentsync.runner as runner
from latentsync.comfy.nodes import RUN_PLAN, LatentSync, LatentSyncAutoOptimize
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
    """Wraps runner.run_pipeline: records the settings each run got and its UNet statistics."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = runner.run_pipeline

        def spy(spec, settings, **kwargs):
            result = original(spec, settings, **kwargs)
            self.calls.append((dict(settings), dict(result.stats)))
            return result

        monkeypatch.setattr(runner, "run_pipeline", spy)


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
    assert synced_audio["waveform"].shape[-1] == round(N_FRAMES / FPS * rate)
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
