"""CUDA code paths of the compile levers (skipped without a GPU; run on the lent H100).

CPU tests prove the levers reach the model; these prove the compiled paths give the
eager result on a real GPU: torch.compile with CUDA graph replay across DeepCache steps
(features kept between steps must survive the next replay), and the compiled VAE.
"""
import pytest
import torch

from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, denoise
from latentsync.pipeline.levers import prepare_unet, prepare_vae, run_scope
from latentsync.pipeline.vae import build_random_vae, decode_latents, encode_images
from latentsync.testing.pipeline_helpers import bare_models, default_settings

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
    plan = dict(device="cuda", precision="fp16", steps=6, scheduler="dpmpp", guidance_scale=1.5,
                cfg_mode="first_fraction", cfg_fraction=0.5, deepcache=True, deepcache_interval=3, deepcache_branch=0,
                attention_backend="auto", channels_last=False)
    data = inputs(device, dtype)
    eager_settings = default_settings(**plan, compile="off", cuda_graphs=False)
    with run_scope(eager_settings, device):
        eager = denoise(prepare_unet(bare_models(unet), eager_settings, []), data,
                        DenoiseSettings.from_settings(eager_settings))
    compiled_settings = default_settings(**plan, compile="default", cuda_graphs=graphs)
    models = bare_models(unet)
    model = prepare_unet(models, compiled_settings, [])
    assert prepare_unet(models, compiled_settings, []) is model and len(models.compiled) == 1
    if shortcuts:
        compiled_settings = compiled_settings.replace(uncond_audio_attention="bias", cfg_shared_prefix=True)
    with run_scope(compiled_settings, device):
        first = denoise(model, data, DenoiseSettings.from_settings(compiled_settings))
        second = denoise(model, data, DenoiseSettings.from_settings(compiled_settings))  # replayed graphs
    scale = eager.float().abs().mean()
    assert torch.isfinite(first).all()
    assert (first.float() - eager.float()).abs().mean() < 2e-2 * scale
    assert torch.equal(first, second)


def test_compiled_vae_matches_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    device, dtype = torch.device("cuda"), torch.float16
    vae = build_random_vae("small").to(device, dtype)
    models = bare_models(vae=vae)
    images = torch.rand(4, 3, 64, 64, device=device, dtype=dtype) * 2 - 1

    def settings(compile_mode):
        return default_settings(device="cuda", precision="fp16", compile=compile_mode, cuda_graphs=False, vae_batch=4)

    options = prepare_vae(models, settings("off"))
    eager = decode_latents(vae, encode_images(vae, images, options), options)
    options = prepare_vae(models, settings("default"))
    with run_scope(settings("default"), device):
        compiled = decode_latents(vae, encode_images(vae, images, options), options)
    assert len(models.compiled) == 2  # the encoder and the decoder
    prepare_vae(models, settings("off"))
    assert (compiled.float() - eager.float()).abs().mean() < 1e-2
