"""The denoising loop applies every diffusion setting of the run plan."""
from types import SimpleNamespace

import pytest
import torch

from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, DenoiseStats, denoise
from latentsync.testing.pipeline_helpers import default_settings


class RecordingUnet(torch.nn.Module):
    """Stands in for the UNet: records batch sizes and DeepCache use per call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, sample, timestep, encoder_hidden_states, deepcache_branch=None, cached_features=None,
                return_deep_features=False):
        self.calls.append(
            dict(batch=sample.shape[0], audio=encoder_hidden_states.shape[0], cached=cached_features is not None,
                 channels=sample.shape[1], t=int(timestep))
        )
        per_sample_audio = encoder_hidden_states.reshape(sample.shape[0], -1).mean(1)
        eps = sample[:, :4] * 0.1 + per_sample_audio.view(-1, 1, 1, 1, 1) * 0.01
        deep = sample[:, :4].clone() if return_deep_features else None
        return SimpleNamespace(sample=eps, deep_features=deep)


def make_inputs(k=1, frames=4, size=4, audio_value=1.0):
    g = torch.Generator().manual_seed(0)
    return DenoiseInputs(
        noise=torch.randn(k, 4, frames, size, size, generator=g),
        mask=torch.ones(k, 1, frames, size, size),
        masked_latents=torch.randn(k, 4, frames, size, size, generator=g),
        ref_latents=torch.randn(k, 4, frames, size, size, generator=g),
        audio=torch.full((k * frames, 50, 384), audio_value),
    )


def settings(**kw):
    base = dict(steps=20, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", cfg_fraction=1.0,
                deepcache=False, deepcache_interval=3, deepcache_branch=0)
    base.update(kw)
    return DenoiseSettings(**base)


@pytest.mark.parametrize("steps", [10, 20])
def test_steps_is_the_number_of_unet_calls(steps):
    unet = RecordingUnet()
    denoise(unet, make_inputs(), settings(steps=steps))
    assert len(unet.calls) == steps
    assert all(c["channels"] == 13 for c in unet.calls)


def test_ddim_timesteps_match_upstream():
    unet = RecordingUnet()
    denoise(unet, make_inputs(), settings(steps=20))
    assert unet.calls[0]["t"] == 951 and unet.calls[-1]["t"] == 1


def test_cfg_doubles_the_batch_and_off_halves_it():
    on, off = RecordingUnet(), RecordingUnet()
    denoise(on, make_inputs(k=2), settings(steps=4))
    denoise(off, make_inputs(k=2), settings(steps=4, cfg_mode="off"))
    assert {c["batch"] for c in on.calls} == {4} and {c["audio"] for c in on.calls} == {16}
    assert {c["batch"] for c in off.calls} == {2}


def test_guidance_one_disables_cfg():
    unet = RecordingUnet()
    denoise(unet, make_inputs(), settings(steps=3, guidance_scale=1.0))
    assert {c["batch"] for c in unet.calls} == {1}


def test_cfg_first_fraction_runs_cfg_only_on_early_steps():
    unet = RecordingUnet()
    stats = DenoiseStats()
    denoise(unet, make_inputs(), settings(steps=10, cfg_mode="first_fraction", cfg_fraction=0.3), stats=stats)
    assert [c["batch"] for c in unet.calls] == [2, 2, 2] + [1] * 7
    assert stats.cfg_calls == 3


def test_guidance_scale_changes_the_result():
    a = denoise(RecordingUnet(), make_inputs(), settings(steps=4, guidance_scale=1.5))
    b = denoise(RecordingUnet(), make_inputs(), settings(steps=4, guidance_scale=3.0))
    assert not torch.allclose(a, b)


def test_deepcache_reuses_features_between_full_steps():
    unet = RecordingUnet()
    stats = DenoiseStats()
    denoise(unet, make_inputs(), settings(steps=10, deepcache=True, deepcache_interval=3), stats=stats)
    assert [c["cached"] for c in unet.calls] == [False, True, True] * 3 + [False]
    assert stats.full_calls == 4 and stats.cached_calls == 6


def test_deepcache_cache_follows_cfg_switching_off():
    unet = RecordingUnet()
    denoise(unet, make_inputs(k=2), settings(steps=6, deepcache=True, deepcache_interval=3,
                                             cfg_mode="first_fraction", cfg_fraction=0.34))
    # steps 0-2 with CFG (batch 4), then 3-5 without (batch 2); step 3 is full anyway.
    assert [c["batch"] for c in unet.calls] == [4, 4, 4, 2, 2, 2]
    assert [c["cached"] for c in unet.calls] == [False, True, True, False, True, True]


def test_dpmpp_scheduler_runs_requested_steps_and_differs_from_ddim():
    unet = RecordingUnet()
    a = denoise(unet, make_inputs(), settings(steps=8, scheduler="dpmpp"))
    assert len(unet.calls) == 8
    b = denoise(RecordingUnet(), make_inputs(), settings(steps=8, scheduler="ddim"))
    assert not torch.allclose(a, b)


def _small_unet_recording(kwarg: str, default):
    """A small random UNet whose calls record one keyword argument (`default` when absent)."""
    from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized

    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small")).eval()
    randomize_zero_initialized(unet, seed=1, std=0.05)
    seen = []
    original = unet.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get(kwarg, default))
        return original(*args, **kwargs)

    unet.forward = spy
    return unet, seen


@pytest.mark.parametrize("deepcache", [False, True])
def test_uncond_audio_bias_tells_the_unet_which_half_is_silent_on_cfg_steps_only(deepcache):
    """uncond_audio_attention: bias -> the CFG steps call the UNet with silent_audio_batch = k
    (the zero-audio half comes first); steps after CFG stops, and the default, do not."""
    unet, seen = _small_unet_recording("silent_audio_batch", 0)
    inputs = make_inputs(k=2, frames=3, size=8)
    common = dict(steps=4, cfg_mode="first_fraction", cfg_fraction=0.5, deepcache=deepcache, deepcache_interval=2)
    computed = denoise(unet, inputs, settings(**common))
    assert seen == [0, 0, 0, 0]
    seen.clear()
    biased = denoise(unet, inputs, settings(**common, uncond_audio_bias=True))
    assert seen == [2, 2, 0, 0]
    assert torch.allclose(biased, computed, atol=1e-5, rtol=1e-5)
    assert DenoiseSettings.from_settings(default_settings(
        steps=4, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", deepcache=False, deepcache_interval=3,
        deepcache_branch=0, uncond_audio_attention="bias")).uncond_audio_bias
    assert not DenoiseSettings.from_settings(default_settings(uncond_audio_attention="compute")).uncond_audio_bias


@pytest.mark.parametrize("deepcache", [False, True])
def test_cfg_shared_prefix_is_asked_for_on_cfg_steps_only_with_the_same_latents(deepcache):
    """cfg_shared_prefix: true -> the CFG steps call the UNet with cfg_shared_prefix=True (their
    halves share sample and timestep); the steps after CFG stops do not."""
    unet, seen = _small_unet_recording("cfg_shared_prefix", False)
    inputs = make_inputs(k=2, frames=3, size=8)
    common = dict(steps=4, cfg_mode="first_fraction", cfg_fraction=0.5, deepcache=deepcache, deepcache_interval=2)
    computed = denoise(unet, inputs, settings(**common))
    assert seen == [False] * 4
    seen.clear()
    shared = denoise(unet, inputs, settings(**common, cfg_shared_prefix=True, uncond_audio_bias=True))
    assert seen == [True, True, False, False]
    assert torch.allclose(shared, computed, atol=1e-5, rtol=1e-5)
    assert DenoiseSettings.from_settings(default_settings(
        steps=4, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", deepcache=False, deepcache_interval=3,
        deepcache_branch=0, cfg_shared_prefix=True)).cfg_shared_prefix
    assert not DenoiseSettings.from_settings(default_settings(cfg_shared_prefix=False)).cfg_shared_prefix
