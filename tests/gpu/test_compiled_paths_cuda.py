"""CUDA code paths of the compile levers (skipped without a GPU; run on the lent H100).

CPU tests prove the levers reach the model; these prove the compiled paths give the
eager result on a real GPU: torch.compile with CUDA graph replay across DeepCache steps
(features kept between steps must survive the next replay), and the compiled VAE.
"""
import pytest
import torch

from latentsync import runner
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, denoise
from latentsync.pipeline.vae import build_random_vae, decode_latents, encode_images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def inputs(device, dtype, k=2, frames=16, size=16):
    g = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=g).to(device, dtype)  # noqa: E731
    return DenoiseInputs(noise=rnd(k, 4, frames, size, size), mask=torch.ones(k, 1, frames, size, size, device=device,
                         dtype=dtype), masked_latents=rnd(k, 4, frames, size, size),
                         ref_latents=rnd(k, 4, frames, size, size), audio=rnd(k * frames, 50, 384))


@pytest.mark.parametrize("graphs, shortcuts", [(False, False), (True, False), (True, True)])
def test_compiled_unet_with_deepcache_matches_eager(graphs, shortcuts, tmp_path, monkeypatch):
    """`shortcuts`: the compiled run also takes the CFG shortcuts (uncond_audio_attention bias,
    cfg_shared_prefix), against the eager run without them."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    device, dtype = torch.device("cuda"), torch.float16
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
    randomize_zero_initialized(unet)
    unet = unet.to(device, dtype).eval().requires_grad_(False)
    plan = dict(steps=6, scheduler="dpmpp", guidance_scale=1.5, cfg_mode="first_fraction", cfg_fraction=0.5,
                deepcache=True, deepcache_interval=3, deepcache_branch=0, attention_backend="auto",
                channels_last=False, cuda_graphs=graphs)
    data = inputs(device, dtype)
    eager = denoise(runner.prepare_unet(unet, dict(plan, compile="off")), data, DenoiseSettings.from_settings(
        dict(plan, compile="off")))
    compiled_settings = dict(plan, compile="default")
    model = runner.prepare_unet(unet, compiled_settings)
    if shortcuts:
        compiled_settings.update(uncond_audio_attention="bias", cfg_shared_prefix=True)
    first = denoise(model, data, DenoiseSettings.from_settings(compiled_settings))
    second = denoise(model, data, DenoiseSettings.from_settings(compiled_settings))  # replayed graphs
    runner._compiled.clear()
    scale = eager.float().abs().mean()
    assert torch.isfinite(first).all()
    assert (first.float() - eager.float()).abs().mean() < 2e-2 * scale
    assert torch.equal(first, second)


def test_compiled_vae_matches_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    device, dtype = torch.device("cuda"), torch.float16
    vae = build_random_vae("small").to(device, dtype)
    images = torch.rand(4, 3, 64, 64, device=device, dtype=dtype) * 2 - 1
    options = runner.prepare_vae(vae, {"compile": "off", "vae_batch": 4})
    eager = decode_latents(vae, encode_images(vae, images, options), options)
    options = runner.prepare_vae(vae, {"compile": "default", "vae_batch": 4})
    compiled = decode_latents(vae, encode_images(vae, images, options), options)
    runner.prepare_vae(vae, {"compile": "off", "vae_batch": 4})
    assert (compiled.float() - eager.float()).abs().mean() < 1e-2
