"""Speed levers reach the UNet (attention backend, channels-last, dtype, torch.compile),
plus the layout helpers and input handling they rely on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentsync.models.unet3d import UNet3DConditionModel, attention_backend, builtin_unet_config, set_attention_backend
from latentsync.models.unet_blocks import ResnetBlock3D, group_norm_across_frames, packed_self_attention
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


# ------------------------------------------------------------------ temporal attention packing


def _sdpa_calls(model, inputs):
    """(query shape, has mask) of every SDPA call of one forward."""
    import torch.nn.functional as F

    calls = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), attn_mask is not None))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            out = model(*inputs).sample
    finally:
        F.scaled_dot_product_attention = original
    return out, calls


def test_packed_self_attention_equals_one_sequence_per_row():
    g = torch.Generator().manual_seed(3)
    n, length, heads, dim = 12, 5, 2, 6
    q, k, v = (torch.randn(n, length, heads * dim, generator=g) for _ in range(3))
    packed = packed_self_attention(q, k, v, heads, pack=4)

    def per_row(x):
        return x.view(n, length, heads, dim).transpose(1, 2)

    expected = torch.nn.functional.scaled_dot_product_attention(per_row(q), per_row(k), per_row(v))
    expected = expected.transpose(1, 2).reshape(n, length, heads * dim)
    assert packed.shape == expected.shape
    assert torch.allclose(packed, expected, atol=1e-6)
    # a key of another sequence in the same row really is masked out: changing sequence 1's
    # keys and values leaves sequence 0's output alone
    k2, v2 = k.clone(), v.clone()
    k2[1] += 5
    v2[1] -= 3
    changed = packed_self_attention(q, k2, v2, heads, pack=4)
    assert torch.equal(changed[0], packed[0]) and not torch.allclose(changed[1], packed[1])


def test_temporal_packing_packs_motion_attention_rows_and_keeps_the_output(unet):
    # 3 frames: a temporal attention is the only one with 3 tokens (spatial ones have
    # 64, 16, 4 or 1, audio keys 50). Batch 2 at 8x8 latents: motion modules see
    # 2 x {64, 16, 4, 1} pixel sequences; a pack of 4 divides all but the 1x1 level's 2.
    frames = 3
    inputs = make_inputs(batch=2, frames=frames, size=8)
    reference, plain_calls = _sdpa_calls(unet, inputs)
    unet.set_temporal_attention_packing(4)
    try:
        assert unet.temporal_attention_packing == 4
        packed_out, packed_calls = _sdpa_calls(unet, inputs)
    finally:
        unet.set_temporal_attention_packing(1)
    plain_rows = sorted(shape[0] for shape, _ in plain_calls if shape[2] == frames)
    packed = [shape for shape, masked in packed_calls if masked]
    still_plain = [shape[0] for shape, masked in packed_calls if shape[2] == frames and not masked]
    assert packed and all(shape[2] == 4 * frames for shape in packed)  # 4 sequences per row
    assert still_plain and set(still_plain) == {2}  # the 1x1 level: 2 rows, not divisible by 4
    assert sorted([shape[0] * 4 for shape in packed] + still_plain) == plain_rows
    assert len(packed_calls) == len(plain_calls)  # spatial and audio attention untouched
    assert rel_err(packed_out, reference) < 1e-5


def test_packed_rows_avoid_flash_when_the_model_forces_flash(unet):
    """CUDA flash attention has no masked kernel: with `attention_backend: flash` (the
    rules' choice on sm 8.x) packed rows must run on a kernel that takes the mask, while
    every other attention stays on flash. Checked through SDPA's backend flags at call time."""
    import torch.nn.functional as F

    flags = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        flags.append((attn_mask is not None, torch.backends.cuda.flash_sdp_enabled(),
                      torch.backends.cuda.mem_efficient_sdp_enabled()))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    inputs = make_inputs(batch=2, frames=3, size=8)
    with torch.no_grad():
        set_attention_backend(unet, "flash")
        flash_plain = unet(*inputs).sample
        unet.set_temporal_attention_packing(4)
        F.scaled_dot_product_attention = spy
        try:
            flash_packed = unet(*inputs).sample
        finally:
            F.scaled_dot_product_attention = original
            unet.set_temporal_attention_packing(1)
            set_attention_backend(unet, "auto")
    masked = [f for f in flags if f[0]]
    unmasked = [f for f in flags if not f[0]]
    assert masked and all(not flash and efficient for _, flash, efficient in masked)
    assert unmasked and all(flash and not efficient for _, flash, efficient in unmasked)
    assert rel_err(flash_packed, flash_plain) < 1e-5
    # other backends take masks themselves: the packed rows keep the model's choice
    assert all(m.packed_backends is None for m in unet.modules() if hasattr(m, "packed_backends"))


def test_temporal_packing_falls_back_when_rows_do_not_divide(unet):
    # 8x8 latents, batch 1: the coarsest motion module has 1x1 pixels, so only 1 row;
    # a pack of 3 divides no level's pixel count and every attention stays one per row.
    inputs = make_inputs(batch=1, frames=4, size=8)
    unet.set_temporal_attention_packing(3)
    try:
        _, calls = _sdpa_calls(unet, inputs)
    finally:
        unet.set_temporal_attention_packing(1)
    assert not any(masked for _, masked in calls)


def test_temporal_packing_rejects_bad_values(unet):
    for bad in (0, -2, 1.5, "8"):
        with pytest.raises(ValueError, match="packing"):
            unet.set_temporal_attention_packing(bad)


# ------------------------------------------------------------------ silent (CFG unconditional) audio

def test_silent_audio_rows_add_the_bias_instead_of_attending_with_the_same_result(unet):
    frames = 3
    sample, t, audio = make_inputs(batch=2, frames=frames, size=8)
    audio = audio.clone()
    audio[:frames] = 0  # batch item 0 hears silence (CFG's unconditional half)
    rows_seen = []
    hooks = [m.to_q.register_forward_hook(lambda mod, inp, out: rows_seen.append(inp[0].shape[0]))
             for name, m in unet.named_modules() if name.endswith("attn2")]
    try:
        with torch.no_grad():
            full = unet(sample, t, encoder_hidden_states=audio).sample
            full_rows = list(rows_seen)
            rows_seen.clear()
            skipped = unet(sample, t, encoder_hidden_states=audio, silent_audio_batch=1).sample
    finally:
        for hook in hooks:
            hook.remove()
    assert hooks and full_rows and all(r == 2 * frames for r in full_rows)
    assert rows_seen == [frames] * len(full_rows)  # only the real-audio item's frames attend
    assert rel_err(skipped, full) < 1e-6
    # the same call with real audio in item 0 would differ: the flag is a promise, not a check
    with torch.no_grad():
        heard = unet(sample, t, encoder_hidden_states=torch.randn_like(audio)).sample
    assert rel_err(heard, full) > 1e-3


def test_silent_audio_batch_must_leave_some_audio(unet):
    sample, t, audio = make_inputs(batch=2, frames=3, size=8)
    for bad in (2, 3, -1):
        with pytest.raises(ValueError, match="silent_audio_batch"), torch.no_grad():
            unet(sample, t, encoder_hidden_states=audio, silent_audio_batch=bad)
    with pytest.raises(ValueError, match="silent_audio_batch"), torch.no_grad():
        unet(sample, t, encoder_hidden_states=None, silent_audio_batch=1)


# ------------------------------------------------------------------ CFG's shared prefix


def _cfg_pair(frames: int, size: int = 8):
    """A CFG batch: the same sample and timestep twice, zero audio then real audio."""
    sample, t, audio = make_inputs(batch=1, frames=frames, size=size)
    return torch.cat([sample, sample]), t, torch.cat([torch.zeros_like(audio), audio])


def _rows_into(unet, names):
    seen = {name: [] for name in names}
    modules = dict(unet.named_modules())
    hooks = [modules[name].register_forward_hook(lambda mod, inp, out, name=name: seen[name].append(inp[0].shape[0]))
             for name in names]
    return seen, hooks


@pytest.mark.parametrize("silent_audio_batch", [0, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cfg_shared_prefix_runs_the_prefix_once_with_the_same_result(silent_audio_batch, channels_last):
    unet = make_unet()
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    frames = 3
    sample, t, audio = _cfg_pair(frames)
    first = "down_blocks.0.attentions.0.transformer_blocks.0"
    watched = ["conv_in", "down_blocks.0.resnets.0.conv1", f"{first}.attn1.to_out.0", f"{first}.attn2.to_out.0",
               f"{first}.ff.net.2", "down_blocks.0.motion_modules.0", "down_blocks.0.resnets.1.conv1", "conv_out"]
    seen, hooks = _rows_into(unet, watched)
    try:
        with torch.no_grad():
            full = unet(sample, t, encoder_hidden_states=audio, silent_audio_batch=silent_audio_batch).sample
            full_rows = {name: list(rows) for name, rows in seen.items()}
            for rows in seen.values():
                rows.clear()
            shared = unet(sample, t, encoder_hidden_states=audio, silent_audio_batch=silent_audio_batch,
                          cfg_shared_prefix=True).sample
    finally:
        for hook in hooks:
            hook.remove()
    assert full_rows["conv_in"] == [2 * frames] and seen["conv_in"] == [frames]
    assert seen["down_blocks.0.resnets.0.conv1"] == [frames]
    assert full_rows[f"{first}.attn1.to_out.0"] == [2 * frames]
    assert seen[f"{first}.attn1.to_out.0"] == [frames]  # the first self-attention: once
    # from the first audio cross-attention on, both halves run (with `bias` only the heard one attends)
    assert seen[f"{first}.attn2.to_out.0"] == [(2 - silent_audio_batch) * frames]
    for after in (f"{first}.ff.net.2", "down_blocks.0.motion_modules.0", "down_blocks.0.resnets.1.conv1", "conv_out"):
        assert seen[after] == full_rows[after], after
    assert shared.shape == full.shape
    assert rel_err(shared, full) < 1e-5
    # the flag is a promise: halves that differ in their sample give a different result
    other = sample.clone()
    other[0] += 1
    with torch.no_grad():
        broken = unet(other, t, encoder_hidden_states=audio, cfg_shared_prefix=True).sample
        honest = unet(other, t, encoder_hidden_states=audio).sample
    assert rel_err(broken, honest) > 1e-3


@pytest.mark.parametrize("branch", [0, 1, 4])
def test_cfg_shared_prefix_with_deepcache_full_and_cached_steps(unet, branch):
    sample, t, audio = _cfg_pair(frames=3)
    with torch.no_grad():
        full = unet(sample, t, encoder_hidden_states=audio, deepcache_branch=branch, return_deep_features=True)
        shared = unet(sample, t, encoder_hidden_states=audio, deepcache_branch=branch, return_deep_features=True,
                      cfg_shared_prefix=True, silent_audio_batch=1)
        assert rel_err(shared.sample, full.sample) < 1e-5
        assert rel_err(shared.deep_features, full.deep_features) < 1e-5
        later = torch.tensor([300])
        cached = unet(sample, later, encoder_hidden_states=audio, deepcache_branch=branch,
                      cached_features=full.deep_features).sample
        cached_shared = unet(sample, later, encoder_hidden_states=audio, deepcache_branch=branch,
                             cached_features=full.deep_features, cfg_shared_prefix=True).sample
    assert rel_err(cached_shared, cached) < 1e-5


def test_cfg_shared_prefix_needs_cfg_halves(unet):
    sample, t, audio = make_inputs(batch=3, frames=2)
    with pytest.raises(ValueError, match="cfg_shared_prefix"), torch.no_grad():
        unet(sample, t, encoder_hidden_states=audio, cfg_shared_prefix=True)
    sample, t, audio = make_inputs(batch=4, frames=2)
    with pytest.raises(ValueError, match="cfg_shared_prefix"), torch.no_grad():
        unet(sample, t, encoder_hidden_states=audio, cfg_shared_prefix=True, silent_audio_batch=1)


# ------------------------------------------------------------------ Triton kernels

def _triton_runs_here() -> bool:
    from latentsync.kernels import triton_available

    return triton_available("cpu")


needs_triton = pytest.mark.skipif(not _triton_runs_here(), reason="triton not installed (or TRITON_INTERPRET unset)")


@needs_triton
def test_triton_temporal_attention_replaces_the_motion_modules_sdpa_calls(unet):
    frames = 3  # only temporal attentions have 3 tokens (see the packing test)
    inputs = make_inputs(batch=1, frames=frames, size=8)
    reference, plain_calls = _sdpa_calls(unet, inputs)
    unet.set_temporal_attention_kernel("triton")
    try:
        assert unet.temporal_attention_kernel == "triton"
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out, calls = _sdpa_calls(unet, inputs)
        ops = {event.key for event in prof.key_averages()}
    finally:
        unet.set_temporal_attention_kernel("sdpa")
    temporal = [shape for shape, _ in plain_calls if shape[2] == frames]
    assert temporal and not [shape for shape, _ in calls if shape[2] == frames]
    assert len(calls) == len(plain_calls) - len(temporal)  # spatial and audio attention untouched
    assert "latentsync::short_self_attention" in ops
    assert unet.temporal_attention_kernel == "sdpa"
    assert rel_err(out, reference) < 1e-5


@needs_triton
def test_triton_geglu_replaces_the_feed_forward_matmuls_and_gelu(unet):
    inputs = make_inputs(batch=1, frames=3, size=8)
    with torch.no_grad():
        reference = unet(*inputs).sample
    plain_ops = _ops_called(unet, inputs)
    unet.set_geglu_kernel("triton")
    try:
        assert unet.geglu_kernel == "triton"
        with torch.no_grad():
            out = unet(*inputs).sample
        ops = _ops_called(unet, inputs)
    finally:
        unet.set_geglu_kernel("torch")
    assert "aten::gelu" in plain_ops and "aten::gelu" not in ops
    assert "latentsync::geglu_linear" in ops and "latentsync::geglu_linear" not in plain_ops
    assert unet.geglu_kernel == "torch"
    assert rel_err(out, reference) < 1e-5


def test_triton_kernels_reject_bad_values_and_say_when_triton_cannot_run(unet, monkeypatch):
    with pytest.raises(ValueError, match="temporal attention kernel"):
        unet.set_temporal_attention_kernel("cuda")
    with pytest.raises(ValueError, match="GEGLU kernel"):
        unet.set_geglu_kernel("fused")
    import latentsync.kernels

    monkeypatch.setattr(latentsync.kernels, "triton_available", lambda device_type="cuda": False)
    with pytest.raises(RuntimeError, match="triton"):
        unet.set_temporal_attention_kernel("triton")
    with pytest.raises(RuntimeError, match="triton"):
        unet.set_geglu_kernel("triton")
    assert unet.temporal_attention_kernel == "sdpa" and unet.geglu_kernel == "torch"


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
