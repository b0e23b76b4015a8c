"""`compile`, `cuda_graphs` and `channels_last` reach the VAE and the denoising loop,
and compiled artifacts go to a cache folder that survives reboots (CPU proofs)."""
import os
from types import SimpleNamespace

import pytest
import torch

from latentsync.errors import InvalidInputError
from latentsync.pipeline import levers
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, denoise
from latentsync.pipeline.vae import VaeOptions, build_random_vae, decode_latents, encode_images
from latentsync.testing.pipeline_helpers import CPU_SMALL, bare_models, default_settings, unchecked_settings


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
    """torch.compile that records its mode and counts calls through the compiled function
    (and the inductor cache folder each call saw)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    record = SimpleNamespace(modes=[], calls=0, cache_dirs=[])

    def compile_(fn, mode=None, dynamic=None, **kw):
        record.modes.append((mode, dynamic))

        def compiled(*args, **kwargs):
            record.calls += 1
            record.cache_dirs.append(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
            return fn(*args, **kwargs)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    return record


BASE = dict(CPU_SMALL, compile="off", cuda_graphs=False, channels_last=False, vae_slicing=False, vae_tiling=False,
            vae_batch=2)


def settings(**changes):
    return default_settings(**{**BASE, **changes})


@pytest.mark.parametrize("compile_mode, graphs, torch_mode", [
    ("default", False, "default"), ("default", True, "default"),  # never CUDA graphs for the VAE
    ("max-autotune", False, "max-autotune-no-cudagraphs"), ("max-autotune", True, "max-autotune-no-cudagraphs"),
])
def test_compile_setting_compiles_the_vae_encoder_and_decoder(small_vae, fake_compile, compile_mode, graphs,
                                                              torch_mode):
    models = bare_models(vae=small_vae)
    options = levers.prepare_vae(models, settings(compile=compile_mode, cuda_graphs=graphs))
    assert fake_compile.modes == [(torch_mode, False)] * 2  # encoder and decoder, static shapes
    # the compiled forms belong to the models: one per part, for this mode and format
    assert sorted(models.compiled) == [("vae", "Decoder", torch_mode, "contiguous"),
                                       ("vae", "Encoder", torch_mode, "contiguous")]
    compiled = dict(models.compiled)
    levers.prepare_vae(models, settings(compile=compile_mode, cuda_graphs=graphs))
    assert len(fake_compile.modes) == 2  # compiled once, reused by the next job
    assert models.compiled == compiled and all(models.compiled[k] is compiled[k] for k in compiled)
    latents = encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    decode_latents(small_vae, latents, options)
    assert fake_compile.calls == 2  # one encode and one decode went through the compiled code

    levers.prepare_vae(models, settings())  # a later plan with compile off runs eager again
    encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    assert fake_compile.calls == 2


def test_compile_off_leaves_the_vae_eager(small_vae, fake_compile):
    models = bare_models(vae=small_vae)
    options = levers.prepare_vae(models, settings())
    encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    assert fake_compile.modes == [] and fake_compile.calls == 0
    assert models.compiled == {}
    assert options == VaeOptions(batch=2)


def test_channels_last_reaches_the_vae(small_vae):
    models = bare_models(vae=small_vae)
    levers.prepare_vae(models, settings(channels_last=True))
    assert small_vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert small_vae.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    levers.prepare_vae(models, settings())
    assert small_vae.encoder.conv_in.weight.is_contiguous()


def test_compile_cache_folder_is_the_users_keyed_one_unless_set(monkeypatch, tmp_path):
    from latentsync.pipeline.compile_cache import CompileCache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = CompileCache.for_device("cpu")
    folder = cache.inductor_dir
    assert folder.parent.parent == tmp_path / "cache" / "latentsync-runner" / "compile"
    assert levers.compile_cache_dir() == folder
    # a run points inductor (and Triton) at the keyed folders (made if missing), and only during the run
    for plan in (settings(compile="default"), settings()):
        with levers.run_scope(plan, torch.device("cpu"), cache):
            assert folder.is_dir() and torch_env() == str(folder)
            assert os.environ["TRITON_CACHE_DIR"] == str(cache.triton_dir)
        assert torch_env() is None and "TRITON_CACHE_DIR" not in os.environ
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert levers.compile_cache_dir() == tmp_path / "mine"  # the user's choice wins
    with levers.run_scope(settings(compile="default"), torch.device("cpu"), cache):
        assert torch_env() == str(tmp_path / "mine")
    assert torch_env() == str(tmp_path / "mine")  # and is left as it was


def torch_env():
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def test_compiled_vae_runs_with_inductor_pointed_at_the_persistent_cache(small_vae, monkeypatch, tmp_path,
                                                                       fake_compile):
    """Compilation happens at the first calls, which a run makes inside `run_scope`."""
    from latentsync.pipeline.compile_cache import CompileCache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    compiled = settings(compile="default")
    options = levers.prepare_vae(bare_models(vae=small_vae), compiled)
    cache = CompileCache.for_device("cpu")
    with levers.run_scope(compiled, torch.device("cpu"), cache):
        encode_images(small_vae, torch.rand(2, 3, 32, 32) * 2 - 1, options)
    assert fake_compile.cache_dirs == [str(cache.inductor_dir)]
    assert torch_env() is None


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
    denoise_settings = DenoiseSettings.from_settings(default_settings(
        steps=6, scheduler="ddim", guidance_scale=1.5, cfg_mode="off", deepcache=True, deepcache_interval=3,
        deepcache_branch=0, compile="default", cuda_graphs=graphs))
    assert denoise_settings.cuda_graphs is graphs
    unet = FeatureUnet()
    denoise(unet, make_inputs(), denoise_settings)
    assert len(unet.returned) == 2 and len(unet.received) == 4
    same_storage = [r.data_ptr() == unet.returned[i // 2].data_ptr() for i, r in enumerate(unet.received)]
    if graphs:
        # a replayed graph overwrites its outputs: cached steps get copies, never the graph's buffer
        assert len(steps_begun) == 6 and not any(same_storage)
        assert all(torch.equal(r, unet.returned[i // 2]) for i, r in enumerate(unet.received))
    else:
        assert steps_begun == [] and all(same_storage)


def test_cuda_graphs_need_compile():
    # a plan asking for CUDA graphs without compile is refused, naming the setting ...
    with pytest.raises(InvalidInputError, match="cuda_graphs"):
        default_settings(compile="off", cuda_graphs=True)
    with pytest.raises(InvalidInputError, match="cuda_graphs"):
        default_settings(compile="default", cuda_graphs=True).replace(compile="off")
    # ... and the denoising loop never replays graphs of an uncompiled UNet anyway
    denoise_settings = DenoiseSettings.from_settings(unchecked_settings(
        steps=6, scheduler="ddim", guidance_scale=1.5, cfg_mode="off", deepcache=False, deepcache_interval=3,
        deepcache_branch=0, compile="off", cuda_graphs=True))
    assert denoise_settings.cuda_graphs is False


def test_flipping_channels_last_on_compiled_models_loads_fresh_models(small_vae, fake_compile, monkeypatch):
    """Compiled graphs take the weights' strides as traced (seen on an H100: a stride assert
    fired when channels_last followed a contiguous compile). Models with compiled graphs are
    never switched to another memory format: the runner loads fresh models instead, and
    torch's global compile caches (other libraries' graphs too) are left alone."""
    from latentsync import runner, weights
    from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))

    def small_models():
        unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
        randomize_zero_initialized(unet)
        return bare_models(unet.eval().requires_grad_(False), build_random_vae("small"))

    compiled = settings(compile="default")
    flipped = settings(compile="default", channels_last=True)
    models = small_models()
    levers.prepare_unet(models, compiled, [])
    levers.prepare_vae(models, compiled)
    levers.prepare_unet(models, compiled, [])
    levers.prepare_vae(models, compiled)
    assert len(fake_compile.modes) == 3  # the UNet, the VAE encoder and decoder: once each
    assert models.memory_format == "contiguous" and len(models.compiled) == 3
    assert not levers.needs_fresh_models(models, compiled)
    assert levers.needs_fresh_models(models, flipped)
    assert levers.needs_fresh_models(models, settings(channels_last=True))  # eager, but the graphs remain
    with pytest.raises(RuntimeError, match="load them again"):
        levers.prepare_unet(models, flipped, [])
    assert models.unet.conv_in.weight.is_contiguous()  # the weights were not switched under the graphs

    # build_pipeline: the cached models would need a switch, so they are loaded again
    loads, cleared = [], []
    fresh = small_models()

    def load_models(weights_name, **kwargs):
        loads.append(weights_name)
        return models if len(loads) == 1 else fresh

    monkeypatch.setattr(weights, "load_models", load_models)
    monkeypatch.setattr(weights, "clear_model_cache", lambda: cleared.append(1))
    pipeline = runner.build_pipeline("random-small", flipped)
    assert loads == ["random-small", "random-small"] and cleared == [1]
    assert pipeline.models is fresh and fresh.memory_format == "channels_last"
    assert fresh.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(fake_compile.modes) == 6  # the fresh models compiled for their format
    assert resets == []  # never torch._dynamo.reset(): that would drop every library's graphs
    # models without compiled graphs switch format in place
    eager = small_models()
    levers.prepare_unet(eager, settings(), [])
    assert not levers.needs_fresh_models(eager, settings(channels_last=True))
