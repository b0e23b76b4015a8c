"""`compile_scope`: torch.compile of the whole UNet, or of each repeated block in place
("regional compilation"), on the models a resident process keeps (CPU proofs).

A fake torch.compile records what is compiled and counts the calls that go through the
compiled code; one test runs the real dynamo (with a recording backend, no inductor) to
show the blocks share graphs, match eager and leave short chunks eager.
"""
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from latentsync.engine import load_ruleset
from latentsync.errors import InvalidInputError
from latentsync.models.motion_module import VanillaTemporalModule
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.models.unet_blocks import ResnetBlock3D, Transformer3DModel
from latentsync.pipeline import levers
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, denoise
from latentsync.pipeline.face_synthesis import plain_kernels
from latentsync.testing.pipeline_helpers import CPU_SMALL, bare_models, default_settings

BLOCK_CLASSES = (ResnetBlock3D, Transformer3DModel, VanillaTemporalModule)
# the small UNet (models/configs/unet_small.json): 4 down blocks of 2 layers, a mid block of 1, 4 up blocks of 3
SMALL_BLOCKS = {ResnetBlock3D: 22, Transformer3DModel: 16, VanillaTemporalModule: 20}


@pytest.fixture()
def small_unet():
    """A fresh UNet per test: compiling in place changes its blocks."""
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
    randomize_zero_initialized(unet)
    return unet.eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def dynamo_limit():
    """prepare_unet raises torch's recompile limit for the process: put it back after each test."""
    from torch._dynamo import config

    limit = config.recompile_limit
    yield
    config.recompile_limit = limit


@pytest.fixture()
def fake_compile(monkeypatch, tmp_path):
    """torch.compile (and so Module.compile) that records what it compiles and counts the
    calls through each compiled function, by the module it belongs to."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    record = SimpleNamespace(compiled=[], calls=Counter())

    def compile_(target, mode=None, dynamic=None, **kw):
        owner = getattr(target, "__self__", target)  # Module.compile passes its bound _call_impl
        record.compiled.append((owner, mode, dynamic))

        def compiled(*args, **kwargs):
            record.calls[id(owner)] += 1
            return target(*args, **kwargs)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_)
    return record


def settings(**changes):
    return default_settings(**{**CPU_SMALL, **changes})


def inputs(frames=4, size=8):
    g = torch.Generator().manual_seed(0)
    return DenoiseInputs(
        noise=torch.randn(1, 4, frames, size, size, generator=g), mask=torch.ones(1, 1, frames, size, size),
        masked_latents=torch.randn(1, 4, frames, size, size, generator=g),
        ref_latents=torch.randn(1, 4, frames, size, size, generator=g),
        audio=torch.randn(frames, 50, 384, generator=g),
    )


# CFG on, with both CFG levers: the blocks see SilentAudio, forks and two batch sizes
STEP = DenoiseSettings(steps=1, guidance_scale=1.5, cfg_mode="all", uncond_audio_bias=True, cfg_shared_prefix=True)


def repeated_blocks(unet):
    """The modules of the block classes inside the down, mid and up blocks, found without levers."""
    parents = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [m for parent in parents for m in parent.modules() if isinstance(m, BLOCK_CLASSES)]


def test_the_rules_compile_the_whole_unet_and_no_rule_picks_blocks():
    """`blocks` is not measured yet: its one value in the rules is the default, `whole`."""
    assert default_settings().compile_scope == "whole"
    rules = load_ruleset().snapshot().by_id.values()
    assert [rule.id for rule in rules if "compile_scope" in rule.set] == ["defaults.upstream"]


@pytest.mark.parametrize("mode, torch_mode", [("default", "default"), ("max-autotune", "max-autotune-no-cudagraphs")])
def test_blocks_scope_compiles_each_repeated_block_in_place_never_the_whole_unet(small_unet, fake_compile, mode,
                                                                               torch_mode):
    models = bare_models(small_unet)
    model = levers.prepare_unet(models, settings(compile=mode, compile_scope="blocks"), [])
    assert model is small_unet  # the module itself, its blocks compiled in place
    owners = [owner for owner, _, _ in fake_compile.compiled]
    assert all(owner is not small_unet for owner in owners)
    assert Counter(type(owner) for owner in owners) == SMALL_BLOCKS
    assert {id(owner) for owner in owners} == {id(m) for m in repeated_blocks(small_unet)}  # each once
    assert {(m, d) for _, m, d in fake_compile.compiled} == {(torch_mode, False)}  # static shapes
    assert list(models.compiled) == [("unet-blocks", torch_mode, "contiguous")]
    # torch allows 8 graphs per code object; 22 ResNet blocks share one forward
    assert torch._dynamo.config.recompile_limit >= 8 * 22


@pytest.mark.parametrize("scope", ["whole", "blocks"])
def test_compile_scope_changes_what_the_unet_call_runs(small_unet, fake_compile, scope):
    """The denoising loop calls the compiled whole UNet, or the eager UNet whose every
    block call goes through its compiled code; same result either way."""
    expected = denoise(small_unet, inputs(), STEP)
    models = bare_models(small_unet)
    model = levers.prepare_unet(models, settings(compile="default", compile_scope=scope), [])
    out = denoise(model, inputs(), STEP)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    blocks = repeated_blocks(small_unet)
    block_calls = sum(fake_compile.calls[id(m)] for m in blocks)
    if scope == "whole":
        assert [owner for owner, _, _ in fake_compile.compiled] == [small_unet]
        assert fake_compile.calls[id(small_unet)] == STEP.steps and block_calls == 0
    else:
        assert fake_compile.calls[id(small_unet)] == 0
        assert all(fake_compile.calls[id(m)] >= 1 for m in blocks)  # every block ran compiled
        assert block_calls >= len(blocks)


def test_switching_scope_or_compile_off_restores_the_eager_blocks(small_unet, fake_compile):
    models = bare_models(small_unet)
    blocks = repeated_blocks(small_unet)
    levers.prepare_unet(models, settings(compile="default", compile_scope="blocks"), [])
    compiled_calls = [m._compiled_call_impl for m in blocks]
    assert all(call is not None for call in compiled_calls)
    n = len(fake_compile.compiled)

    # whole: the blocks are eager again, and the whole UNet is compiled once
    whole = levers.prepare_unet(models, settings(compile="default", compile_scope="whole"), [])
    assert all(m._compiled_call_impl is None for m in blocks)
    assert len(fake_compile.compiled) == n + 1 and fake_compile.compiled[-1][0] is small_unet
    fake_compile.calls.clear()
    whole(torch.randn(2, 13, 4, 8, 8), 10, encoder_hidden_states=torch.randn(8, 50, 384))
    assert fake_compile.calls[id(small_unet)] == 1 and sum(fake_compile.calls[id(m)] for m in blocks) == 0

    # blocks again: the kept compiled calls are put back, nothing is compiled again
    assert levers.prepare_unet(models, settings(compile="default", compile_scope="blocks"), []) is small_unet
    assert len(fake_compile.compiled) == n + 1
    assert all(m._compiled_call_impl is call for m, call in zip(blocks, compiled_calls))

    # compile off: eager blocks, the module itself, nothing compiled, no call through compiled code
    assert levers.prepare_unet(models, settings(), []) is small_unet
    assert all(m._compiled_call_impl is None for m in blocks)
    fake_compile.calls.clear()
    small_unet(torch.randn(2, 13, 4, 8, 8), 10, encoder_hidden_states=torch.randn(8, 50, 384))
    assert not fake_compile.calls and len(fake_compile.compiled) == n + 1


def test_a_second_prepare_with_the_same_plan_compiles_nothing(small_unet, fake_compile):
    models = bare_models(small_unet)
    plan = settings(compile="default", compile_scope="blocks")
    levers.prepare_unet(models, plan, [])
    n, kept = len(fake_compile.compiled), models.compiled[("unet-blocks", "default", "contiguous")]
    assert n == sum(SMALL_BLOCKS.values()) and len(kept) == n
    assert levers.prepare_unet(models, plan, []) is small_unet
    assert len(fake_compile.compiled) == n and models.compiled[("unet-blocks", "default", "contiguous")] == kept
    # another mode is another compile of every block
    levers.prepare_unet(models, settings(compile="max-autotune", compile_scope="blocks"), [])
    assert len(fake_compile.compiled) == 2 * n
    assert {m for _, m, _ in fake_compile.compiled[n:]} == {"max-autotune-no-cudagraphs"}
    # compiled models keep their memory format (as for the whole UNet)
    with pytest.raises(RuntimeError, match="load them again"):
        levers.prepare_unet(models, settings(compile="default", compile_scope="blocks", channels_last=True), [])


def test_cuda_graphs_with_blocks_is_rejected():
    with pytest.raises(InvalidInputError, match="compile_scope: blocks cannot replay CUDA graphs"):
        default_settings(compile="default", cuda_graphs=True, compile_scope="blocks")
    with pytest.raises(InvalidInputError, match="settings.compile_scope"):
        default_settings(compile="default", cuda_graphs=True).replace(compile_scope="blocks")
    # each alone is fine
    assert default_settings(compile="default", cuda_graphs=True).compile_scope == "whole"
    assert default_settings(compile="default", compile_scope="blocks").cuda_graphs is False


@pytest.mark.slow
def test_real_dynamo_shares_block_graphs_matches_eager_and_leaves_short_chunks_eager(small_unet, monkeypatch):
    """torch.compile for real (dynamo with a recording backend instead of inductor): blocks of
    one class share graphs, the result is eager's, and a short chunk (`plain_kernels`) runs
    eagerly instead of compiling its one-off shapes."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: real_compile(fn, backend=backend,
                                                                                           dynamic=dynamic))
    torch._dynamo.reset()
    try:
        expected = denoise(small_unet, inputs(), STEP)
        model = levers.prepare_unet(bare_models(small_unet), settings(compile="default", compile_scope="blocks"), [])
        out = denoise(model, inputs(), STEP)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert 0 < len(graphs) < len(repeated_blocks(small_unet))  # identical blocks shared their graphs
        compiled = len(graphs)
        with plain_kernels(model):
            denoise(model, inputs(frames=2), STEP)
        assert len(graphs) == compiled  # the short chunk ran eagerly
        denoise(model, inputs(frames=2), STEP)
        assert len(graphs) > compiled  # outside plain_kernels the same call compiles its shapes
    finally:
        torch._dynamo.reset()
