"""Every speed lever of the run plan changes what the pipeline does (CPU proofs).

Denoise-loop levers (steps, scheduler, CFG schedule, DeepCache) are in
test_denoise.py and tests/models; frames_per_batch is in tests/runner.
"""
import numpy as np
import pytest
import torch

from latentsync.pipeline import levers
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.pipeline.denoise import DenoiseSettings
from latentsync.pipeline.face_synthesis import FaceChunk, FaceSynthesizer, pad_frames
from latentsync.pipeline.vae import VaeOptions, apply_vae_options, build_random_vae, decode_latents, encode_images
from latentsync.testing.pipeline_helpers import CPU_SMALL, bare_models, default_settings


@pytest.fixture(scope="module")
def small_unet():
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
    randomize_zero_initialized(unet)
    return unet.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def small_vae():
    return build_random_vae("small")


def synthesizer(unet, vae, dtype=torch.float32, pad=False, batch_chunks=None, **denoise):
    settings = dict(steps=1, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", cfg_fraction=1.0,
                    deepcache=False, deepcache_interval=3, deepcache_branch=0)
    settings.update(denoise)
    return FaceSynthesizer(
        unet.to(dtype), torch.nn.Module.to(vae, dtype=dtype), np.ones((64, 64), np.float32), chunk_frames=4,
        denoise_settings=DenoiseSettings(**settings), vae_options=VaeOptions(batch=4), device="cpu",
        dtype=dtype, noise=torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0)), pad_partial_chunks=pad,
        batch_chunks=batch_chunks,
    )


def chunk(n=4):
    rng = np.random.default_rng(0)
    return FaceChunk(crops=rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8), audio=torch.randn(n, 50, 384))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_precision_sets_the_dtype_of_unet_activations(small_unet, small_vae, dtype):
    seen = []
    hook = small_unet.conv_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        synthesizer(small_unet, small_vae, dtype=dtype).run([chunk()])
    finally:
        hook.remove()
        small_unet.to(torch.float32)
        torch.nn.Module.to(small_vae, dtype=torch.float32)
    assert seen and set(seen) == {dtype}


def test_partial_chunks_are_padded_only_where_padding_cannot_change_them(small_unet, small_vae):
    """A chunk shorter than chunk_frames (a clip's end) is denoised at its own length in a UNet
    call of its own, as upstream: the motion modules and GroupNorms see all of a chunk's frames,
    so padding it would change its real frames. Padding (asked for by a compiled UNet's static
    shapes) only reaches the VAE, where every image is on its own."""
    shapes, encoded = [], []
    unet_hook = small_unet.conv_in.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    vae_hook = small_vae.encoder.register_forward_hook(lambda m, i, o: encoded.append(i[0].shape[0]))
    try:
        unpadded = synthesizer(small_unet, small_vae, pad=False)
        out = unpadded.run([chunk(3)])
        unpadded_encoded = sum(encoded)
        padded = synthesizer(small_unet, small_vae, pad=True)
        out_padded = padded.run([chunk(3)])
    finally:
        unet_hook.remove()
        vae_hook.remove()
    # frames are folded into the batch (x2 CFG): 3 real frames in both UNet calls, never 4
    assert shapes[0][0] // 2 == 3 and shapes[1][0] // 2 == 3
    assert unpadded_encoded == 2 * 3 and sum(encoded) - unpadded_encoded == 2 * 4  # the VAE saw the padded chunk
    assert out[0].shape[0] == out_padded[0].shape[0] == 3
    assert padded.stats.padded_frames == 1 and unpadded.stats.padded_frames == 0
    # padded to chunk_frames it is a short chunk (own call at its own length); unpadded, the
    # batch's frame count is its longest chunk's, so this one is whole
    assert padded.stats.short_chunks == 1 and unpadded.stats.short_chunks == 0
    assert np.abs(out[0].astype(int) - out_padded[0].astype(int)).max() <= 1  # the padding changed no real frame


def test_a_short_last_batch_is_topped_up_to_the_batch_size_only_when_padding(small_unet, small_vae):
    samples = []
    hook = small_unet.conv_in.register_forward_hook(lambda m, i, o: samples.append(i[0].shape[0]))
    try:
        alone = synthesizer(small_unet, small_vae, pad=False, batch_chunks=3).run([chunk(4)])
        topped = synthesizer(small_unet, small_vae, pad=True, batch_chunks=3)
        out = topped.run([chunk(4)])
    finally:
        hook.remove()
    # frames fold into the batch, x2 for CFG: 1 chunk -> 8 samples, topped up to 3 chunks -> 24
    assert samples == [2 * 4, 2 * 3 * 4]
    assert len(out) == 1 and out[0].shape == alone[0].shape  # the copies' outputs are dropped
    assert topped.stats.padded_frames == 8
    assert np.abs(out[0].astype(int) - alone[0].astype(int)).max() <= 1  # batch elements are independent


def test_pad_frames_mirrors_the_tail():
    assert pad_frames(np.arange(3), 7).tolist() == [0, 1, 2, 1, 0, 1, 2]
    assert pad_frames(np.arange(1), 3).tolist() == [0, 0, 0]


def test_vae_batch_sets_the_number_of_vae_calls(small_vae):
    calls = []
    hook = small_vae.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        images = torch.randn(10, 3, 64, 64)
        encode_images(small_vae, images, VaeOptions(batch=4))
        assert calls == [4, 4, 2]
        calls.clear()
        encode_images(small_vae, images, VaeOptions(batch=16))
        assert calls == [10]
    finally:
        hook.remove()


def test_vae_slicing_and_tiling_reach_the_vae(small_vae):
    decoded_batches = []
    hook = small_vae.decoder.register_forward_hook(lambda m, i, o: decoded_batches.append(i[0].shape))
    try:
        apply_vae_options(small_vae, VaeOptions(slicing=True))
        assert small_vae.use_slicing and not small_vae.use_tiling
        decode_latents(small_vae, torch.randn(3, 4, 8, 8), VaeOptions(batch=3, slicing=True))
        assert [s[0] for s in decoded_batches] == [1, 1, 1]  # one image at a time
        decoded_batches.clear()
        apply_vae_options(small_vae, VaeOptions(tiling=True))
        assert small_vae.use_tiling and not small_vae.use_slicing
        small_vae.tile_sample_min_size, small_vae.tile_latent_min_size = 32, 4
        decode_latents(small_vae, torch.randn(1, 4, 8, 8), VaeOptions(batch=1, tiling=True))
        assert len(decoded_batches) > 1 and all(s[-1] < 8 for s in decoded_batches)  # decoded tile by tile
    finally:
        hook.remove()
        apply_vae_options(small_vae, VaeOptions())


def settings(**changes):
    return default_settings(**{**CPU_SMALL, **changes})


def test_prepare_unet_applies_attention_backend_and_channels_last(small_unet):
    models = bare_models(small_unet)
    model = levers.prepare_unet(models, settings(attention_backend="math", channels_last=True), [])
    assert model is small_unet and small_unet.attention_backend == "math"
    assert small_unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert models.memory_format == "channels_last"
    levers.prepare_unet(models, settings(attention_backend="auto", channels_last=False), [])
    assert small_unet.conv_in.weight.is_contiguous() and models.memory_format == "contiguous"
    assert small_unet.attention_backend == "auto"


def test_prepare_unet_applies_temporal_attention_pack(small_unet):
    models = bare_models(small_unet)
    levers.prepare_unet(models, settings(temporal_attention_pack=8), [])
    assert small_unet.temporal_attention_packing == 8
    levers.prepare_unet(models, settings(), [])  # the rules' default: upstream's 1
    assert small_unet.temporal_attention_packing == 1


def test_prepare_unet_applies_the_triton_kernels_or_says_why_not(small_unet, monkeypatch):
    import latentsync.kernels

    models = bare_models(small_unet)
    triton = settings(temporal_attention_kernel="triton", geglu_kernel="triton")
    if latentsync.kernels.triton_available("cpu"):  # Triton's interpreter (tests/conftest.py)
        warnings: list[str] = []
        levers.prepare_unet(models, triton, warnings)
        assert small_unet.temporal_attention_kernel == "triton" and small_unet.geglu_kernel == "triton"
        assert warnings == []
    # where Triton cannot run, the job keeps PyTorch's kernels and the report says so
    monkeypatch.setattr(latentsync.kernels, "triton_available", lambda device_type="cuda": False)
    warnings = []
    levers.prepare_unet(models, triton, warnings)
    assert small_unet.temporal_attention_kernel == "sdpa" and small_unet.geglu_kernel == "torch"
    assert len(warnings) == 2
    assert "temporal_attention_kernel: triton asked for, running sdpa" in warnings[0]
    assert "geglu_kernel: triton asked for, running torch" in warnings[1]
    levers.prepare_unet(models, settings(), [])  # the rules' defaults: torch's kernels
    assert small_unet.temporal_attention_kernel == "sdpa" and small_unet.geglu_kernel == "torch"


@pytest.mark.parametrize(
    "compile_mode, graphs, torch_mode",
    [("default", False, "default"), ("default", True, "reduce-overhead"),
     ("max-autotune", False, "max-autotune-no-cudagraphs"), ("max-autotune", True, "max-autotune")],
)
def test_compile_setting_calls_torch_compile_with_the_mode(small_unet, monkeypatch, tmp_path, compile_mode, graphs,
                                                           torch_mode):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    calls = []

    def fake_compile(model, mode=None, dynamic=None):
        calls.append((model, mode, dynamic))
        return ("compiled", mode)

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert levers.torch_compile_mode(settings(compile=compile_mode, cuda_graphs=graphs)) == torch_mode
    models = bare_models(small_unet)
    plan = settings(compile=compile_mode, cuda_graphs=graphs, attention_backend="auto", channels_last=False)
    first = levers.prepare_unet(models, plan, [])
    second = levers.prepare_unet(models, plan, [])  # compiled once, reused across jobs
    assert first == ("compiled", torch_mode) and second is first
    assert calls == [(small_unet, torch_mode, False)]  # static shapes
    assert list(models.compiled) == [("unet", torch_mode, "contiguous")]  # held by the models, one entry
    assert models.compiled[("unet", torch_mode, "contiguous")] is first
    # other models (another process's load, fresh weights) compile their own
    assert levers.prepare_unet(bare_models(small_unet), plan, []) is not first
    assert len(calls) == 2
    # compile off: the eager UNet, nothing compiled
    assert levers.torch_compile_mode(settings()) is None
    assert levers.prepare_unet(bare_models(small_unet), settings(), []) is small_unet and len(calls) == 2


def test_vae_decode_region_mask_decodes_only_the_repainted_rows(small_unet, small_vae):
    from latentsync.faces import face_mask
    from latentsync.pipeline.face_synthesis import decode_start_row

    mask = face_mask(128)
    first_repaint = int(np.flatnonzero((mask < 0.5).any(axis=1))[0])
    row = decode_start_row(mask, 16)
    assert 0 < row * 8 <= first_repaint  # the margin starts above the repainted region

    def run(region):
        shapes = []
        hook = small_vae.decoder.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
        try:
            synth = FaceSynthesizer(
                small_unet, small_vae, mask, chunk_frames=4,
                denoise_settings=DenoiseSettings(steps=1, cfg_mode="off", guidance_scale=1.0),
                vae_options=VaeOptions(batch=4, decode_region=region), device="cpu", dtype=torch.float32,
                noise=torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0)), pad_partial_chunks=False,
            )
            rng = np.random.default_rng(0)
            crops = rng.integers(0, 255, (4, 128, 128, 3), dtype=np.uint8)
            return synth.run([FaceChunk(crops=crops, audio=torch.randn(4, 50, 384))])[0], shapes, synth.stats
        finally:
            hook.remove()

    full, full_shapes, full_stats = run("full")
    part, part_shapes, part_stats = run("mask")
    assert full_shapes[0][-2] == 16 and part_shapes[0][-2] == 16 - row
    assert part_stats.vae_decoded_latent_rows == 16 - row and full_stats.vae_decoded_latent_rows == 16
    # fully kept pixels (mask 1) are the reference in both; the soft edge of upstream's mask
    # (Lanczos-resized) and the repainted region blend in the (cropped) decode
    keep = mask == 1
    assert keep.sum() > 0.5 * keep.size
    assert np.array_equal(full[:, keep], part[:, keep])
    assert np.abs(full[:, ~keep].astype(int) - part[:, ~keep].astype(int)).mean() < 30  # same picture, cropped context


def test_reference_frames_per_chunk_encodes_one_reference_per_chunk(small_unet, small_vae):
    """per_chunk: the VAE encodes the masked faces plus one reference per chunk (the
    middle real frame), and every frame of a chunk gets that reference's latents."""
    from latentsync.pipeline import face_synthesis

    rng = np.random.default_rng(1)
    chunks = [FaceChunk(crops=rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8), audio=torch.randn(n, 50, 384))
              for n in (4, 3)]  # the second chunk is short (padded to 4 frames for the VAE only)
    seen = []

    def spy_denoise(unet, inputs, settings, **kwargs):
        seen.append(inputs.ref_latents.clone())  # (k, 4, frames, h, w) of each UNet call
        return inputs.noise

    def run(mode):
        synth = synthesizer(small_unet, small_vae)
        synth.reference_frames = mode
        encoded = []
        seen.clear()
        original = face_synthesis.encode_images
        face_synthesis.encode_images = lambda vae, images, *a: encoded.append(images.clone()) or original(vae, images, *a)
        face_synthesis.denoise, saved = spy_denoise, face_synthesis.denoise
        try:
            out = synth.run(chunks)
        finally:
            face_synthesis.encode_images, face_synthesis.denoise = original, saved
        return out, torch.cat(encoded), synth.stats, list(seen)

    _, per_frame_images, per_frame_stats, per_frame_refs = run("per_frame")
    out, per_chunk_images, per_chunk_stats, per_chunk_refs = run("per_chunk")
    assert per_frame_stats.vae_encode_images == 2 * 8 and per_chunk_stats.vae_encode_images == 8 + 2
    # the references encoded are the middle real frames of each chunk (frame 2 of 4, 1 of 3)
    pixels = face_synthesis.crops_to_pixels(np.concatenate([chunks[0].crops[[2]], chunks[1].crops[[1]]]), "cpu",
                                            torch.float32)
    assert torch.equal(per_chunk_images[8:], pixels)
    # two UNet calls: the whole chunk (4 frames), then the short one at its own length (3)
    assert [(ref.shape[0], ref.shape[2]) for ref in per_chunk_refs] == [(1, 4), (1, 3)]
    # one reference latent for all frames of a chunk, a different one per chunk
    for ref in per_chunk_refs:
        assert all(torch.equal(ref[0, :, f], ref[0, :, 0]) for f in range(ref.shape[2]))
    assert not torch.equal(per_chunk_refs[0][0, :, 0], per_chunk_refs[1][0, :, 0])
    for ref in per_frame_refs:  # upstream: each frame its own
        assert not torch.equal(ref[0, :, 0], ref[0, :, 1])
    assert [o.shape[0] for o in out] == [4, 3]


def test_reference_frames_rejects_unknown_values(small_unet, small_vae):
    with pytest.raises(ValueError, match="reference_frames"):
        FaceSynthesizer(small_unet, small_vae, np.ones((64, 64), np.float32), chunk_frames=4,
                        denoise_settings=DenoiseSettings(steps=1), vae_options=VaeOptions(), device="cpu",
                        dtype=torch.float32, noise=torch.randn(4, 8, 8), pad_partial_chunks=False,
                        reference_frames="first")
