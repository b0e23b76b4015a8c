"""A clip's last, short chunk computes what upstream computes: its own UNet call at its own length.

The motion modules attend across a chunk's frames and the ResNet GroupNorms take their
statistics over all of them, so a short chunk padded to 16 frames (the old behaviour
with `frames_per_batch` >= 32 or compile) changed its real frames. These tests compare a
10-frame tail run alone with the same tail batched with whole chunks (and with the static
shapes a compiled plan uses); the CUDA + torch.compile variant is in
tests/gpu/test_tail_chunks_cuda.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync.faces import face_mask
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.pipeline.denoise import DenoiseSettings
from latentsync.pipeline.face_synthesis import FaceChunk, FaceSynthesizer, pad_frames
from latentsync.pipeline.vae import VaeOptions, build_random_vae

RES = 64  # latent 8 x 8
FLOAT32_ROUNDING = 1e-4  # max |difference| / mean |value| of the float faces (batch sizes change BLAS blocking)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """The small model's ops are too small to share out: on a busy machine torch's thread team
    made these tests ten times slower (74 s against 7.7 s for one test on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_unet():
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
    randomize_zero_initialized(unet, std=0.2)  # large enough that the motion modules matter
    return unet.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def small_vae():
    return build_random_vae("small")


class CompiledStandIn(torch.nn.Module):
    """Stands for torch.compile's wrapper: records the samples it gets and exposes the
    eager module as `_orig_mod`, as an OptimizedModule does."""

    def __init__(self, unet):
        super().__init__()
        self._orig_mod = unet
        self.samples: list[tuple] = []

    def forward(self, sample, *args, **kwargs):
        self.samples.append(tuple(sample.shape))
        return self._orig_mod(sample, *args, **kwargs)


def synthesizer(unet, vae, *, pad: bool, batch_chunks=None, deepcache=False, **kwargs) -> FaceSynthesizer:
    settings = DenoiseSettings(steps=2, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", cfg_fraction=1.0,
                               deepcache=deepcache, deepcache_interval=2, deepcache_branch=0)
    return FaceSynthesizer(unet, vae, face_mask(RES, np.float64), chunk_frames=16, denoise_settings=settings,
                           vae_options=VaeOptions(batch=16), device="cpu", dtype=torch.float32,
                           noise=torch.randn(4, RES // 8, RES // 8, generator=torch.Generator().manual_seed(0)),
                           pad_partial_chunks=pad, batch_chunks=batch_chunks, float_faces=True, **kwargs)


def chunk(frames: int, seed: int) -> FaceChunk:
    rng = np.random.default_rng(seed)
    # a smooth face-like gradient plus noise, so neighbouring frames differ a little
    base = np.linspace(40, 200, RES)[None, :, None] + np.linspace(0, 40, RES)[:, None, None]
    crops = np.clip(base[None] + rng.normal(0, 25, (frames, RES, RES, 3)), 0, 255).astype(np.uint8)
    audio = torch.from_numpy(rng.normal(0, 1, (frames, 50, 384)).astype(np.float32))
    return FaceChunk(crops=crops, audio=audio)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).mean())


@pytest.mark.parametrize("deepcache", [False, True])
def test_a_tail_batched_with_whole_chunks_equals_the_tail_alone(small_unet, small_vae, deepcache):
    whole, tail = [chunk(16, 1), chunk(16, 2)], chunk(10, 3)
    alone = synthesizer(small_unet, small_vae, pad=False, deepcache=deepcache).run([tail])[0]
    assert alone.shape == (10, RES, RES, 3) and alone.dtype == np.float32
    # frames_per_batch 48 without compile (mixed lengths in one batch) ...
    mixed = synthesizer(small_unet, small_vae, pad=False, deepcache=deepcache).run(whole + [tail])
    # ... and with a compiled plan's static shapes (batch topped up to 4 chunks of 16 frames)
    static = synthesizer(small_unet, small_vae, pad=True, batch_chunks=4, deepcache=deepcache).run(whole + [tail])
    for outputs in (mixed, static):
        assert [o.shape[0] for o in outputs] == [16, 16, 10]
        assert relative(outputs[2], alone) < FLOAT32_ROUNDING
    # the whole chunks are what they are alone too (other batch sizes: other BLAS blocking, so
    # compare the mean difference; the old padding moved the tail's by 1.4 % on average)
    first_alone = synthesizer(small_unet, small_vae, pad=False, deepcache=deepcache).run([whole[0]])[0]
    assert np.abs(static[0] - first_alone).mean() < 1e-5 * np.abs(first_alone).mean()


def test_padding_a_tail_would_change_its_frames(small_unet, small_vae):
    """Why the tail runs on its own: the same 10 frames mirrored to 16 (the old padding) give
    other real frames, by far more than rounding (so the test above can fail)."""
    tail = chunk(10, 3)
    alone = synthesizer(small_unet, small_vae, pad=False).run([tail])[0]
    padded = FaceChunk(crops=pad_frames(tail.crops, 16), audio=pad_frames(tail.audio, 16))
    as_padded = synthesizer(small_unet, small_vae, pad=False).run([padded])[0][:10]
    assert relative(as_padded, alone) > 100 * FLOAT32_ROUNDING
    assert np.abs(as_padded - alone).mean() > 1e-3 * np.abs(alone).mean()


def test_the_unet_calls_a_batch_makes(small_unet, small_vae):
    """Compiled plan: the compiled UNet gets only whole chunks, always `batch_chunks` of them;
    the tail runs on the eager module at its own length."""
    compiled = CompiledStandIn(small_unet)
    eager_samples = []
    hook = small_unet.conv_in.register_forward_hook(lambda m, i, o: eager_samples.append(i[0].shape[0]))
    try:
        synth = synthesizer(compiled, small_vae, pad=True, batch_chunks=3)
        out = synth.run([chunk(16, 1), chunk(10, 3)])
        last = synth.run([chunk(7, 4)])  # a last batch holding only a short chunk
    finally:
        hook.remove()
    steps, cfg = 2, 2
    # (batch, channels, frames, h, w): 3 whole chunks (one real + two copies) x CFG
    assert compiled.samples == [(3 * cfg, 13, 16, 8, 8)] * steps
    # frames fold into the UNet's batch: whole batch 3*16*2 via the stand-in, tails 10*2 and 7*2 eagerly
    assert eager_samples == [3 * 16 * cfg] * steps + [10 * cfg] * steps + [7 * cfg] * steps
    assert [o.shape[0] for o in out] == [16, 10] and last[0].shape[0] == 7
    # with a real torch.compile wrapper the eager module is its `_orig_mod` (nothing compiles here)
    assert synthesizer(torch.compile(small_unet), small_vae, pad=True).short_chunk_unet is small_unet
    assert synth.stats.short_chunks == 2
    # VAE padding only: 6 + 16 (a copy) frames in the first batch, 9 + 2 x 16 in the last
    assert synth.stats.padded_frames == 6 + 16 + 9 + 32


def test_uint8_output_is_the_rounded_float_output(small_unet, small_vae):
    tail = chunk(10, 3)
    floats = synthesizer(small_unet, small_vae, pad=False).run([tail])[0]
    synth = synthesizer(small_unet, small_vae, pad=False)
    synth.float_faces = False
    crops = synth.run([tail])[0]
    expected = np.round((np.clip(floats, -1, 1) + 1) * 127.5)
    assert np.abs(crops.astype(int) - expected).max() <= 1


def test_a_clip_of_24_frames_gives_the_same_output_at_any_batch_size(tmp_path):
    """The pipeline end to end (random small model, CPU): 24 output frames are a whole chunk and
    an 8-frame tail. `frames_per_batch: 32` puts them in one batch; 16 runs them one by one,
    as upstream. The outputs agree to float32 rounding (at most 1 level after truncation)."""
    from latentsync.pipeline.clips import ArrayClipSource, ArrayFrameSink
    from latentsync.runner import build_pipeline
    from latentsync.testing.pipeline_helpers import CPU_SMALL, default_settings

    frames, landmarks = _clip_with_known_faces(20)
    audio = np.random.default_rng(0).normal(0, 0.1, 14400).astype(np.float32)  # 0.9 s: 45 steps -> 24 frames
    outputs, results = [], []
    for batch in (16, 32):
        settings = default_settings(**dict(CPU_SMALL, steps=2, resolution=64, frames_per_batch=batch))
        sink = ArrayFrameSink()
        results.append(build_pipeline("random-small", settings)(ArrayClipSource(frames, 25, audio, landmarks), sink))
        outputs.append(sink.frames())
    assert outputs[0].shape == outputs[1].shape == (24, *frames.shape[1:])
    difference = np.abs(outputs[0].astype(int) - outputs[1].astype(int))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-3 * difference.size
    assert (outputs[0] != frames[list(range(20)) + [19, 18, 17, 16]]).any()  # the faces were repainted
    stats = results[1].stats
    assert stats["short_chunks"] == 1 and stats["audio_covered_frames"] == 23
    assert results[0].frames_total == 24 and "steps // 2 + 2" in stats["output_frames_rule"]


def _clip_with_known_faces(count: int):
    """`count` 96 x 160 frames with a bright face-like blob at a known, slowly moving place."""
    from latentsync.faces import FaceLandmarks

    rng = np.random.default_rng(5)
    frames = np.empty((count, 96, 160, 3), np.uint8)
    landmarks = []
    for i in range(count):
        frame = np.full((96, 160, 3), 90, np.uint8) + rng.integers(0, 20, (96, 160, 3), dtype=np.uint8)
        cx, cy = 80 + 0.3 * i, 48.0
        yy, xx = np.mgrid[:96, :160]
        frame[((xx - cx) / 22) ** 2 + ((yy - cy) / 30) ** 2 < 1] = (200, 160, 140)
        frames[i] = frame
        landmarks.append(FaceLandmarks(points=np.array([[cx - 10, cy - 10], [cx + 10, cy - 10], [cx, cy + 2]]),
                                       confidence=1.0))
    return frames, landmarks


def test_float_faces_at_the_paste_size_are_upstreams_resize(small_unet, small_vae):
    """The pipeline asks for the faces at the crop size: resized on the model's device with
    bicubic + antialias, as upstream's restore_video resizes them before the paste."""
    import torch.nn.functional as F

    tail = chunk(10, 3)
    at_res = synthesizer(small_unet, small_vae, pad=False).run([tail])[0]
    at_crop = synthesizer(small_unet, small_vae, pad=False, float_size=(70, 52)).run([tail])[0]
    expected = F.interpolate(torch.from_numpy(at_res).permute(0, 3, 1, 2), size=(70, 52), mode="bicubic",
                             antialias=True, align_corners=False).permute(0, 2, 3, 1).numpy()
    assert at_crop.shape == (10, 70, 52, 3) and at_crop.dtype == np.float32
    np.testing.assert_allclose(at_crop, expected, atol=1e-5)


def test_short_chunks_run_on_torchs_kernels_and_put_them_back(small_unet, monkeypatch):
    """plain_kernels: no Triton kernel (compiled per sequence length) and no cuDNN timing for the
    tail's new shapes, the model's own choice restored afterwards."""
    from latentsync.models.motion_module import TemporalAttention
    from latentsync.models.unet_blocks import GEGLU
    from latentsync.pipeline.face_synthesis import plain_kernels

    attention = [m for m in small_unet.modules() if isinstance(m, TemporalAttention)]
    geglu = [m for m in small_unet.modules() if isinstance(m, GEGLU)]
    op, fused = object(), object()  # stand-ins for the Triton kernels
    for m in attention:
        monkeypatch.setattr(m, "short_attention", op)
    for m in geglu:
        monkeypatch.setattr(m, "fused", fused)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with plain_kernels(small_unet):
        assert all(m.short_attention is None for m in attention) and all(m.fused is None for m in geglu)
        assert torch.backends.cudnn.benchmark is False
    assert all(m.short_attention is op for m in attention) and all(m.fused is fused for m in geglu)
    assert torch.backends.cudnn.benchmark is True
