"""`compile`, `cuda_graphs` and `channels_last` reach the VAE and the denoising loop,
and compiled artifacts go to a cache folder that survives reboots (CPU proofs)."""
from types import SimpleNamespace

import pytest
import torch

from latentsync import runner
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, denoise
from latentsync.pipeline.vae import VaeOptions, build_random_vae, decode_latents, encode_images



def make_inputs(k=1, frames=4, size=4):
    g = torch.Generator().manual_seed(0)
    return DenoiseInputs(
        noise=torch.randn(k, 4, frames, size, size, generator=g), mask=torch.ones(k, 1, frames, size, size),
        masked_latents=torch.randn(k, 4, frames, size, size, generator=g),
        ref_latents=torch.randn(k, 4, frames, size, size, generator=g), audio=torch.ones(k * frames, 50, 384),
    )


@pytest.fixture()
def small_vae():
    return build_random_vae("small")


@pytest.fixture()
def fake_compile(monkeypatch, tmp_path):
    """torch.compile that records its mode and counts calls through the compiled function."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    record = SimpleNamespace(modes=[], calls=0)

    def compile_(fn, mode=None, dynamic=None, **kw):
        record.modes.append((mode, dynamic))

        def compiled(*args, **kwargs):
            record.calls += 1
            return fn(*args, **kwargs)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    return record


BASE = {"compile": "off", "cuda_graphs": False, "channels_last": False, "vae_slicing": False, "vae_tiling": False,
        "vae_batch": 2}


@pytest.mark.parametrize("compile_mode, graphs, torch_mode", [
    ("default", False, "default"), ("default", True, "default"),  # never CUDA graphs for the VAE
    ("max-autotune", False, "max-autotune-no-cudagraphs"), ("max-autotune", True, "max-autotune-no-cudagraphs"),
])
def test_compile_setting_compiles_the_vae_encoder_and_decoder(small_vae, fake_compile, compile_mode, graphs,
                                                              torch_mode):
    options = runner.prepare_vae(small_vae, dict(BASE, compile=compile_mode, cuda_graphs=graphs))
    assert fake_compile.modes == [(torch_mode, False)] * 2  # encoder and decoder, static shapes
    runner.prepare_vae(small_vae, dict(BASE, compile=compile_mode, cuda_graphs=graphs))
    assert len(fake_compile.modes) == 2  # compiled once, reused by the next job
    latents = encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    decode_latents(small_vae, latents, options)
    assert fake_compile.calls == 2  # one encode and one decode went through the compiled code

    runner.prepare_vae(small_vae, dict(BASE))  # a later plan with compile off runs eager again
    encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    assert fake_compile.calls == 2


def test_compile_off_leaves_the_vae_eager(small_vae, fake_compile):
    options = runner.prepare_vae(small_vae, dict(BASE))
    encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    assert fake_compile.modes == [] and fake_compile.calls == 0
    assert options == VaeOptions(batch=2)


def test_channels_last_reaches_the_vae(small_vae):
    runner.prepare_vae(small_vae, dict(BASE, channels_last=True))
    assert small_vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert small_vae.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    runner.prepare_vae(small_vae, dict(BASE))
    assert small_vae.encoder.conv_in.weight.is_contiguous()


def test_compile_cache_folder_is_the_users_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert runner.compile_cache_dir() == tmp_path / "cache" / "latentsync-runner" / "inductor"
    folder = runner.use_persistent_compile_cache()
    assert folder.is_dir() and torch_env() == str(folder)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert runner.use_persistent_compile_cache() == tmp_path / "mine"  # the user's choice wins


def torch_env():
    import os

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def test_compiling_the_vae_points_inductor_at_the_persistent_cache(small_vae, monkeypatch, tmp_path, fake_compile):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    runner.prepare_vae(small_vae, dict(BASE, compile="default"))
    assert torch_env() == str(tmp_path / "xdg" / "latentsync-runner" / "inductor")


class FeatureUnet(torch.nn.Module):
    """Returns deep features and records which tensors the cached steps receive."""

    def __init__(self):
        super().__init__()
        self.returned, self.received = [], []

    def forward(self, sample, timestep, encoder_hidden_states, deepcache_branch=None, cached_features=None,
                return_deep_features=False):
        deep = None
        if return_deep_features:
            deep = [sample[:, :4] * 1.0]
            self.returned.append(deep[0])
        if cached_features is not None:
            self.received.append(cached_features[0])
        return SimpleNamespace(sample=sample[:, :4] * 0.1, deep_features=deep)


@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_graphs_start_a_graph_step_per_call_and_copy_cached_features(monkeypatch, graphs):
    steps_begun = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps_begun.append(1))
    settings = DenoiseSettings.from_settings(dict(
        steps=6, scheduler="ddim", guidance_scale=1.5, cfg_mode="off", deepcache=True, deepcache_interval=3,
        deepcache_branch=0, compile="default", cuda_graphs=graphs))
    assert settings.cuda_graphs is graphs
    unet = FeatureUnet()
    denoise(unet, make_inputs(), settings)
    assert len(unet.returned) == 2 and len(unet.received) == 4
    same_storage = [r.data_ptr() == unet.returned[i // 2].data_ptr() for i, r in enumerate(unet.received)]
    if graphs:
        # a replayed graph overwrites its outputs: cached steps get copies, never the graph's buffer
        assert len(steps_begun) == 6 and not any(same_storage)
        assert all(torch.equal(r, unet.returned[i // 2]) for i, r in enumerate(unet.received))
    else:
        assert steps_begun == [] and all(same_storage)


def test_cuda_graphs_need_compile():
    settings = DenoiseSettings.from_settings(dict(
        steps=6, scheduler="ddim", guidance_scale=1.5, cfg_mode="off", deepcache=False, deepcache_interval=3,
        deepcache_branch=0, compile="off", cuda_graphs=True))
    assert settings.cuda_graphs is False


def test_flipping_channels_last_on_a_compiled_vae_drops_its_graphs(small_vae, fake_compile, monkeypatch):
    # compiled graphs take the weights' strides as traced (seen on an H100: a stride assert
    # fired when channels_last followed a contiguous compile), so they must be rebuilt
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    runner.prepare_vae(small_vae, dict(BASE, compile="default"))
    runner.prepare_vae(small_vae, dict(BASE, compile="default"))
    assert resets == [] and len(fake_compile.modes) == 2
    runner.prepare_vae(small_vae, dict(BASE, compile="default", channels_last=True))
    assert resets == [1] and len(fake_compile.modes) == 4  # encoder and decoder compiled again
    runner.prepare_vae(small_vae, dict(BASE))  # eager again, then contiguous: nothing compiled is left to drop
    assert resets == [1, 1]
