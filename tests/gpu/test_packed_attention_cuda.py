"""Packed temporal attention on a real GPU (skipped without CUDA; run on the lent H100).

On a GPU, a masked SDPA call takes other kernels than the unmasked one (cuDNN's or the
memory-efficient kernel's masked paths; flash has none). These check that packing
several 16-frame sequences per row with the block-diagonal mask gives one sequence per
row's result there too, at the full-size model's shapes and in a whole UNet forward.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpu_testlib import cuda_unet_and_inputs
from latentsync.models.unet_blocks import packed_self_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BACKENDS = {"auto": None, "cudnn": [SDPBackend.CUDNN_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION]}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("rows, heads, dim", [(8192, 8, 40), (2048, 8, 80), (512, 8, 160)])
def test_packed_rows_match_one_sequence_per_row_at_full_size(backend, rows, heads, dim):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(rows, 16, heads * dim, device="cuda", dtype=torch.float16, generator=g) for _ in range(3))

    def split(x):
        return x.view(rows, 16, heads, dim).transpose(1, 2)

    with sdpa_kernel([SDPBackend.MATH]):  # the reference: plain math, one sequence per row, in fp32
        expected = F.scaled_dot_product_attention(split(q).float(), split(k).float(), split(v).float())
    expected = expected.transpose(1, 2).reshape(rows, 16, heads * dim)
    chosen = BACKENDS[backend]
    if chosen is None:
        packed = packed_self_attention(q, k, v, heads, pack=8)
    else:
        try:
            with sdpa_kernel(chosen):
                packed = packed_self_attention(q, k, v, heads, pack=8)
        except RuntimeError as error:  # a backend without a masked kernel on this card
            pytest.skip(f"{backend} has no masked kernel here: {error}")
    assert (packed.float() - expected).abs().max().item() < 2e-3


def small_cuda_unet_and_inputs():
    """The small random UNet in fp16 on the GPU, and a CFG-sized batch (2 x 16 frames, 32x32 latents)."""
    return cuda_unet_and_inputs("small", latent=32)


def test_unet_forward_with_packing_matches_unpacked_on_cuda():
    unet, sample, audio = small_cuda_unet_and_inputs()
    with torch.no_grad():
        plain = unet(sample, 500, encoder_hidden_states=audio).sample.float()
        unet.set_temporal_attention_packing(8)
        packed = unet(sample, 500, encoder_hidden_states=audio).sample.float()
    rel = ((packed - plain).norm() / plain.norm()).item()
    assert rel < 5e-3


@pytest.mark.parametrize("compiled", [False, True])
def test_flash_backend_with_packing_runs_and_matches_on_cuda(compiled, tmp_path, monkeypatch):
    """sm 8.x plans force flash attention and pack temporal rows: flash has no masked
    kernel on CUDA, so the packed rows must take another kernel rather than fail."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    unet, sample, audio = small_cuda_unet_and_inputs()
    unet.set_attention_backend("flash")
    with torch.no_grad():
        plain = unet(sample, 500, encoder_hidden_states=audio).sample.float()
        unet.set_temporal_attention_packing(8)
        model = torch.compile(unet, dynamic=False) if compiled else unet
        packed = model(sample, 500, encoder_hidden_states=audio).sample.float()
    rel = ((packed - plain).norm() / plain.norm()).item()
    assert rel < 5e-3
