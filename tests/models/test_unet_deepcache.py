"""DeepCache runs natively in the UNet forward: cached steps skip the deep branch, reuse
the cached feature through the skip connection, and match the upstream DeepCache SD helper."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from latentsync.models.motion_module import VanillaTemporalModule
from latentsync.models.unet3d import is_deepcache_full_step
from latentsync.models.unet_blocks import ResnetBlock3D, Transformer3DModel
from unet_testlib import make_inputs, rel_err

COUNTED = (ResnetBlock3D, Transformer3DModel, VanillaTemporalModule)


def count_calls(model, run) -> Counter:
    """Forward calls per module kind and per top-level block during `run()`."""
    calls: Counter = Counter()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, COUNTED):
            handles.append(module.register_forward_hook(lambda m, i, o: calls.update([type(m).__name__])))
        if name.count(".") == 1 and name.split(".")[0] in ("down_blocks", "up_blocks") or name == "mid_block":
            handles.append(module.register_forward_hook(lambda m, i, o, n=name: calls.update([n])))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def test_cached_step_with_same_inputs_equals_full_step(unet):
    sample, t, audio = make_inputs(batch=2)
    with torch.no_grad():
        plain = unet(sample, t, audio).sample
        for branch in (0, 4, unet.num_skips - 1):
            full = unet(sample, t, audio, deepcache_branch=branch, return_deep_features=True)
            cached = unet(sample, t, audio, deepcache_branch=branch, cached_features=full.deep_features)
            assert torch.equal(full.sample, plain)
            assert rel_err(cached.sample, plain) < 1e-6


def test_deep_features_are_batch_first(unet):
    sample, t, audio = make_inputs(batch=2, frames=3, size=8)
    with torch.no_grad():
        out = unet(sample, t, audio, deepcache_branch=0, return_deep_features=True)
    # branch 0: the input of the last up layer, full width, full resolution
    assert out.deep_features.shape == (2, 3, unet.config.block_out_channels[0], 8, 8)


def test_cached_step_skips_the_deep_branch(unet):
    sample, t, audio = make_inputs()
    with torch.no_grad():
        feats = unet(sample, t, audio, deepcache_branch=0, return_deep_features=True).deep_features
    full = count_calls(unet, lambda: unet(sample, t, audio))
    cached = count_calls(unet, lambda: unet(sample, t, audio, deepcache_branch=0, cached_features=feats))
    # full: 8 down + 2 mid + 12 up resnets; 20 motion modules (not in the mid block)
    assert full["ResnetBlock3D"] == 22 and full["VanillaTemporalModule"] == 20
    # branch 0: only the last layer of the last up block runs
    assert cached["ResnetBlock3D"] == 1 and cached["Transformer3DModel"] == 1
    assert cached["VanillaTemporalModule"] == 1
    assert not any(cached[f"down_blocks.{i}"] for i in range(4)) and not cached["mid_block"]
    assert [cached[f"up_blocks.{i}"] for i in range(4)] == [0, 0, 0, 1]


def test_deeper_branch_recomputes_more(unet):
    sample, t, audio = make_inputs()
    counts = []
    for branch in range(unet.num_skips):
        with torch.no_grad():
            feats = unet(sample, t, audio, deepcache_branch=branch, return_deep_features=True).deep_features
        calls = count_calls(unet, lambda: unet(sample, t, audio, deepcache_branch=branch, cached_features=feats))
        counts.append(calls["ResnetBlock3D"])
        assert calls["mid_block"] == 0
    # branch c recomputes the down layers producing skips 1..c and the up layers consuming 0..c
    assert counts[0] == 1 and counts == sorted(counts) and counts[-1] == 20


def test_cached_features_are_actually_used(unet):
    sample, t, audio = make_inputs(seed=1)
    other_sample, _, _ = make_inputs(seed=2)
    with torch.no_grad():
        plain = unet(sample, t, audio).sample
        stale = unet(other_sample, t, audio, deepcache_branch=0, return_deep_features=True).deep_features
        reused = unet(sample, t, audio, deepcache_branch=0, cached_features=stale).sample
        reused_again = unet(sample, t, audio, deepcache_branch=0, cached_features=stale).sample
    assert rel_err(reused, plain) > 1e-3
    assert torch.equal(reused, reused_again)


def test_invalid_deepcache_arguments(unet):
    sample, t, audio = make_inputs()
    with torch.no_grad(), pytest.raises(ValueError, match="deepcache_branch"):
        unet(sample, t, audio, deepcache_branch=unet.num_skips)
    with torch.no_grad(), pytest.raises(ValueError, match="needs deepcache_branch"):
        unet(sample, t, audio, cached_features=torch.zeros(1))
    with torch.no_grad(), pytest.raises(ValueError, match="cached_features"):
        unet(sample, t, audio, deepcache_branch=0, cached_features=torch.zeros(2, 4, 32, 8, 8))


def test_full_step_schedule_matches_upstream_uniform_mode():
    # interval 3 over 20 steps: steps 0, 3, ..., 18 are full (7 full, 13 cached)
    full = [i for i in range(20) if is_deepcache_full_step(i, 3)]
    assert full == [0, 3, 6, 9, 12, 15, 18]
    assert all(is_deepcache_full_step(i, 1) for i in range(5))


# ---------------------------------------------------------------- oracle: upstream's helper semantics


def _helper_is_skip(block_i: int, layer_i: int, kind: str, branch: int) -> bool:
    """The DeepCache SD helper's skip rule on a cached step: block = branch // 3, layer = branch % 3."""
    cache_block, cache_layer = branch // 3, branch % 3
    if kind == "mid" or block_i > cache_block:
        return True
    if block_i < cache_block:
        return False
    return layer_i >= cache_layer if kind == "down" else layer_i > cache_layer


def _wrap_like_helper(model, branch: int, cache: dict, replay: bool):
    """Forward hooks that record outputs (full step) or substitute them (cached step) for the
    modules the DeepCache SD helper wraps: resnets, attentions, resamplers and whole blocks (motion
    modules are not wrapped). Test-only oracle; the library never patches forwards."""
    targets = []
    for bi, block in enumerate(model.down_blocks):
        for li, resnet in enumerate(block.resnets):
            targets.append((resnet, ("down", "resnet", bi, li)))
            if block.attentions is not None:
                targets.append((block.attentions[li], ("down", "attn", bi, li)))
        if block.downsamplers is not None:
            targets.append((block.downsamplers[0], ("down", "downsampler", bi, len(block.resnets))))
        targets.append((block, ("down", "block", bi, 0)))
    targets.append((model.mid_block, ("mid", "mid", 0, 0)))
    n_up = len(model.up_blocks)
    for i, block in enumerate(model.up_blocks):
        bi, n_layers = n_up - i - 1, len(block.resnets)
        for li, resnet in enumerate(block.resnets):
            targets.append((resnet, ("up", "resnet", bi, n_layers - li - 1)))
            if block.attentions is not None:
                targets.append((block.attentions[li], ("up", "attn", bi, n_layers - li - 1)))
        if block.upsamplers is not None:
            targets.append((block.upsamplers[0], ("up", "upsampler", bi, 0)))
        targets.append((block, ("up", "block", bi, 0)))

    def hook(module, args, output, key):
        kind, _, bi, li = key
        if replay and _helper_is_skip(bi, li, kind, branch):
            return cache[key]
        cache[key] = output
        return output

    return [m.register_forward_hook(lambda m, a, o, k=key: hook(m, a, o, k)) for m, key in targets]


@pytest.mark.parametrize("branch", [0, 1, 5, 9])
def test_native_deepcache_matches_upstream_helper(unet, branch):
    step1 = make_inputs(seed=10, timestep=800)
    step2 = make_inputs(seed=11, timestep=750)
    cache: dict = {}
    with torch.no_grad():
        handles = _wrap_like_helper(unet, branch, cache, replay=False)
        unet(*step1)
        for h in handles:
            h.remove()
        handles = _wrap_like_helper(unet, branch, cache, replay=True)
        expected = unet(*step2).sample
        for h in handles:
            h.remove()
        feats = unet(*step1, deepcache_branch=branch, return_deep_features=True).deep_features
        native = unet(*step2, deepcache_branch=branch, cached_features=feats).sample
        plain = unet(*step2).sample
    assert rel_err(native, expected) < 1e-5
    assert rel_err(native, plain) > 1e-4  # and the cache made a difference
