"""A clip's short last chunk on CUDA with torch.compile: the same real frames as the chunk alone.

CPU twin: tests/pipeline/test_tail_chunks.py. Here the UNet is really compiled
(dynamic=False, with and without CUDA graphs): the compiled graph only ever sees whole
16-frame chunks (a short chunk runs on the eager module at its own length, so it costs no
new graph), and the short chunk's frames equal the chunk run alone, eagerly, to float32
rounding. The last test runs the pipeline with `rules:quality`'s plan against the same plan
with `frames_per_batch: 16` and compile off. Skipped without a GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync.faces import face_mask
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
from latentsync.pipeline.denoise import DenoiseSettings
from latentsync.pipeline.face_synthesis import FaceChunk, FaceSynthesizer
from latentsync.pipeline.vae import VaeOptions, build_random_vae

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RES = 128


def chunk(frames: int, seed: int) -> FaceChunk:
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 200, RES)[None, :, None] + np.linspace(0, 40, RES)[:, None, None]
    crops = np.clip(base[None] + rng.normal(0, 25, (frames, RES, RES, 3)), 0, 255).astype(np.uint8)
    return FaceChunk(crops=crops, audio=torch.from_numpy(rng.normal(0, 1, (frames, 50, 384)).astype(np.float32)))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small"))
    randomize_zero_initialized(unet, std=0.2)
    unet = unet.to("cuda", torch.float32).eval().requires_grad_(False)
    vae = build_random_vae("small").to("cuda", torch.float32)
    return unet, vae


class Recorder(torch.nn.Module):
    """Passes calls through to `inner` and keeps the shape of every sample."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.samples: list[tuple] = []

    def forward(self, sample, *args, **kwargs):
        self.samples.append(tuple(sample.shape))
        return self.inner(sample, *args, **kwargs)


def synthesizer(unet, vae, *, pad: bool, batch_chunks=None, cuda_graphs=False, **kwargs) -> FaceSynthesizer:
    settings = DenoiseSettings(steps=4, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", cfg_fraction=1.0,
                               deepcache=True, deepcache_interval=2, deepcache_branch=0, cuda_graphs=cuda_graphs)
    return FaceSynthesizer(unet, vae, face_mask(RES, np.float64), chunk_frames=16, denoise_settings=settings,
                           vae_options=VaeOptions(batch=16), device="cuda", dtype=torch.float32,
                           noise=torch.randn(4, RES // 8, RES // 8, generator=torch.Generator().manual_seed(0)),
                           pad_partial_chunks=pad, batch_chunks=batch_chunks, float_faces=True, **kwargs)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_batch_with_a_tail_equals_the_tail_alone(models, mode, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    unet, vae = models
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        whole, tail = [chunk(16, 1), chunk(16, 2)], chunk(10, 3)
        alone = synthesizer(unet, vae, pad=False).run([tail])[0]
        compiled = torch.compile(unet, mode=mode, dynamic=False)
        # the pipeline's default: the eager module behind the compiled one runs short chunks
        assert synthesizer(compiled, vae, pad=True, batch_chunks=3).short_chunk_unet is unet
        graph, eager = Recorder(compiled), Recorder(unet)
        synth = synthesizer(graph, vae, pad=True, batch_chunks=3, cuda_graphs=mode == "reduce-overhead",
                            short_chunk_unet=eager)
        batched = synth.run(whole + [tail])
        again = synth.run(whole + [tail])  # replayed graphs
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert [o.shape[0] for o in batched] == [16, 16, 10]
    scale = np.abs(alone).mean()
    assert np.abs(batched[2] - alone).max() < 1e-4 * scale  # float32 rounding
    assert np.abs(again[2] - batched[2]).max() < 1e-5 * scale
    latent = RES // 8
    # the compiled graph only ever got 3 whole chunks (x2 CFG); the tail ran eagerly at 10 frames
    assert set(graph.samples) == {(3 * 2, 13, 16, latent, latent)}
    assert set(eager.samples) == {(2, 13, 10, latent, latent)}
    assert synth.stats.short_chunks == 2


def test_quality_plan_equals_its_fpb16_eager_twin_on_a_clip_with_a_tail(tmp_path, monkeypatch):
    """`rules:quality` (compiled, several chunks per batch on a big GPU) against the same plan
    with frames_per_batch 16 and compile off, both in fp32 without TF32 (float32 rounding):
    24 output frames = a whole chunk + an 8-frame tail."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from latentsync.api import plan_for_arrays
    from latentsync.faces import FaceLandmarks
    from latentsync.pipeline.clips import ArrayClipSource, ArrayFrameSink
    from latentsync.runner import build_pipeline

    rng = np.random.default_rng(5)
    frames = np.full((20, 240, 320, 3), 90, np.uint8) + rng.integers(0, 20, (20, 240, 320, 3), dtype=np.uint8)
    landmarks = []
    yy, xx = np.mgrid[:240, :320]
    for i in range(20):
        cx, cy = 160 + 0.3 * i, 120.0
        frames[i][((xx - cx) / 44) ** 2 + ((yy - cy) / 60) ** 2 < 1] = (200, 160, 140)
        landmarks.append(FaceLandmarks(points=np.array([[cx - 20, cy - 20], [cx + 20, cy - 20], [cx, cy + 4]]),
                                       confidence=1.0))
    audio = rng.normal(0, 0.1, 14400).astype(np.float32)  # 0.9 s -> 24 output frames
    # the plan the rules pick for a long clip (compiled, several chunks per batch on a big GPU),
    # run on the short one
    _, plan = plan_for_arrays(n_frames=3000, fps=25.0, audio_seconds=120.0, weights="random-small", goal="quality")
    quality = plan.settings.replace(precision="fp32", tf32=False)
    print("quality plan:", {k: quality.to_dict()[k] for k in ("compile", "cuda_graphs", "frames_per_batch")})
    assert quality.frames_per_batch >= 32 or quality.compiles, "the rules picked neither batching nor compile here"
    twin = quality.replace(frames_per_batch=16, compile="off", cuda_graphs=False)
    outputs, stats = [], []
    for settings in (quality, twin):
        sink = ArrayFrameSink()
        result = build_pipeline("random-small", settings)(ArrayClipSource(frames, 25.0, audio, landmarks), sink)
        outputs.append(sink.frames())
        stats.append(result.stats)
    assert outputs[0].shape == outputs[1].shape == (24, 240, 320, 3)
    difference = np.abs(outputs[0].astype(int) - outputs[1].astype(int))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-3 * difference.size
    assert stats[0]["short_chunks"] == stats[1]["short_chunks"] == 1
