"""Speed levers reach the UNet (attention backend, channels-last, dtype, torch.compile),
plus the layout helpers and input handling they rely on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentsync.models.unet3d import UNet3DConditionModel, attention_backend, builtin_unet_config, set_attention_backend
from latentsync.models.unet_blocks import ResnetBlock3D, group_norm_across_frames
from unet_testlib import make_inputs, make_unet, rel_err

FLASH_CPU_OP = "aten::_scaled_dot_product_flash_attention_for_cpu"


def _ops_called(model, inputs) -> set[str]:
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(*inputs)
    return {event.key for event in prof.key_averages()}


# ------------------------------------------------------------------ attention backend


def test_attention_backend_changes_the_kernel(unet):
    inputs = make_inputs()
    with torch.no_grad():
        reference = unet(*inputs).sample
    with attention_backend(unet, "math"):
        assert FLASH_CPU_OP not in _ops_called(unet, inputs)
        with torch.no_grad():
            math_out = unet(*inputs).sample
    assert unet.attention_backend == "auto"
    set_attention_backend(unet, "flash")
    try:
        assert FLASH_CPU_OP in _ops_called(unet, inputs)
    finally:
        set_attention_backend(unet, "auto")
    assert rel_err(math_out, reference) < 1e-5


def test_efficient_backend_is_really_requested(unet):
    # The memory-efficient kernel has no CPU implementation: asking for it must fail,
    # which shows the setting is applied rather than silently ignored.
    with attention_backend(unet, "efficient"), torch.no_grad(), pytest.raises(RuntimeError):
        unet(*make_inputs())


def test_unknown_attention_backend(unet):
    with pytest.raises(ValueError, match="attention backend"):
        set_attention_backend(unet, "xformers")


# ------------------------------------------------------------------ channels-last


def test_channels_last_keeps_outputs_and_changes_layout():
    model = make_unet()
    inputs = make_inputs(batch=2, frames=3, size=16)
    with torch.no_grad():
        reference = model(*inputs).sample
    model = model.to(memory_format=torch.channels_last)
    layouts = []
    hook = model.down_blocks[1].resnets[0].conv1.register_forward_hook(
        lambda m, args, out: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        out = model(*inputs).sample
    hook.remove()
    assert layouts == [True]
    assert out.is_contiguous() and out.shape == reference.shape
    assert rel_err(out, reference) < 1e-5


# ------------------------------------------------------------------ dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_activations_follow_model_dtype(unet, dtype):
    model = make_unet().to(dtype)
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
        for m in model.modules()
        if isinstance(m, (ResnetBlock3D, nn.Linear))
    ]
    inputs = make_inputs()
    try:
        with torch.no_grad():
            out = model(*inputs).sample
    except RuntimeError as error:  # some CPU builds lack half kernels
        pytest.skip(f"{dtype} forward not supported on this CPU build: {error}")
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        reference = unet(*inputs).sample
    assert out.dtype == dtype and set(seen) == {dtype}
    assert rel_err(out.float(), reference) < 5e-2


# ------------------------------------------------------------------ inputs


def test_timestep_and_audio_forms_agree(unet):
    sample, t, audio = make_inputs(batch=2, frames=3)
    with torch.no_grad():
        reference = unet(sample, t, audio).sample
        for timestep in (500, 500.0, torch.tensor(500), torch.tensor([500, 500])):
            assert torch.equal(unet(sample, timestep, audio).sample, reference)
        assert torch.equal(unet(sample, t, audio.view(2, 3, 50, 384)).sample, reference)
        other = unet(sample, torch.tensor([500, 20]), audio).sample
    assert torch.equal(other[0], reference[0]) and not torch.allclose(other[1], reference[1])


def test_bad_inputs_raise(unet):
    sample, t, audio = make_inputs(batch=1, frames=4)
    with torch.no_grad():
        with pytest.raises(ValueError, match="batch\\*frames"):
            unet(sample, t, audio[:3])
        with pytest.raises(ValueError, match="frames"):
            unet(sample[:, :, 0], t, audio)
        long_sample, _, long_audio = make_inputs(frames=25, size=8)
        with pytest.raises(ValueError, match="24 frames"):
            unet(long_sample, t, long_audio)


def test_fresh_model_outputs_zero_until_randomized():
    model = UNet3DConditionModel.from_config(builtin_unet_config("small")).eval()
    with torch.no_grad():
        assert not model(*make_inputs()).sample.any()
    assert make_unet(seed=5).conv_out.weight.abs().sum() > 0
    assert torch.equal(make_unet(seed=5).conv_out.weight, make_unet(seed=5).conv_out.weight)


def test_unsupported_config_value_is_named():
    with pytest.raises(ValueError, match="use_linear_projection"):
        UNet3DConditionModel.from_config({**builtin_unet_config("small"), "use_linear_projection": True})


# ------------------------------------------------------------------ layout helpers


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_across_frames_equals_5d_group_norm(channels_last):
    generator = torch.Generator().manual_seed(0)
    batch, frames, channels, size = 2, 5, 16, 6
    video = torch.randn(batch, channels, frames, size, size, generator=generator) * 3 + 1
    norm = nn.GroupNorm(4, channels, eps=1e-5)
    nn.init.normal_(norm.weight, generator=generator)
    nn.init.normal_(norm.bias, generator=generator)
    expected = norm(video)  # upstream: 5-D GroupNorm, statistics span frames
    folded = video.transpose(1, 2).reshape(batch * frames, channels, size, size)
    if channels_last:
        folded = folded.contiguous(memory_format=torch.channels_last)
    out = group_norm_across_frames(folded, frames, 4, norm.weight, norm.bias, 1e-5)
    out = out.reshape(batch, frames, channels, size, size).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-5)
    per_frame = norm(folded).reshape(batch, frames, channels, size, size).transpose(1, 2)
    assert not torch.allclose(per_frame, expected, atol=1e-3)  # folding frames into the batch differs


# ------------------------------------------------------------------ torch.compile


@pytest.mark.slow
def test_torch_compile_with_and_without_deepcache():
    model = make_unet(layers_per_block=1)
    inputs = make_inputs(frames=3)
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        plain = model(*inputs).sample
        assert rel_err(compiled(*inputs).sample, plain) < 1e-6
        full = compiled(*inputs, deepcache_branch=0, return_deep_features=True)
        cached = compiled(*inputs, deepcache_branch=0, cached_features=full.deep_features)
    assert rel_err(full.sample, plain) < 1e-6 and rel_err(cached.sample, plain) < 1e-5
