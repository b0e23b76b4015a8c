"""The Triton kernels against PyTorch's own math (CPU: Triton's interpreter; GPU: compiled)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from latentsync.kernels import triton_available  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if not triton_available(DEVICE):
    pytest.skip("Triton cannot run here (no GPU and TRITON_INTERPRET unset)", allow_module_level=True)

from latentsync.kernels.geglu_linear import geglu_linear  # noqa: E402
from latentsync.kernels.short_attention import short_self_attention  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3}


def _sdpa_reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, width = qkv.shape
    q, k, v = qkv.double().chunk(3, dim=-1)

    def split(x):
        return x.reshape(n, length, heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(n, length, width // 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "n, length, heads, head_dim",
    [(37, 16, 8, 40),  # the top level's shape (head width 40, padded to 64); 37 sequences: a partial block
     (5, 16, 2, 80),
     (6, 12, 2, 20),  # 12 frames: padded keys must get no weight
     (3, 16, 1, 160)],
)
def test_short_attention_equals_sdpa(n, length, heads, head_dim, dtype):
    g = torch.Generator().manual_seed(n * length + head_dim)
    qkv = torch.randn(n, length, 3 * heads * head_dim, generator=g).to(DEVICE, dtype)
    out = short_self_attention(qkv, heads)
    assert out.shape == (n, length, heads * head_dim) and out.dtype == dtype
    expected = _sdpa_reference(qkv, heads)
    assert (out.double() - expected).abs().max().item() < TOLERANCE[dtype]


def test_short_attention_keeps_sequences_and_heads_apart():
    g = torch.Generator().manual_seed(1)
    heads, head_dim = 2, 8
    qkv = torch.randn(4, 16, 3 * heads * head_dim, generator=g).to(DEVICE)
    base = short_self_attention(qkv, heads)
    changed = qkv.clone()
    inner = heads * head_dim
    # keys of sequence 2, head 0 only (a random change: one added to every key would not
    # change the softmax)
    changed[2, :, inner:inner + head_dim] += 3.0 * torch.randn(16, head_dim, generator=g).to(DEVICE)
    out = short_self_attention(changed, heads)
    assert torch.equal(out[[0, 1, 3]], base[[0, 1, 3]])  # other sequences untouched
    assert torch.equal(out[2, :, head_dim:], base[2, :, head_dim:])  # sequence 2's other head untouched
    assert not torch.allclose(out[2, :, :head_dim], base[2, :, :head_dim])


def test_short_attention_reads_a_strided_projection():
    # rows of a wider buffer (stride > width): the kernel follows the strides, no copy needed
    g = torch.Generator().manual_seed(2)
    wide = torch.randn(6, 16, 100, generator=g).to(DEVICE)
    qkv = wide[:, :, :96]
    out = short_self_attention(qkv, 4)
    assert (out.double() - _sdpa_reference(qkv.contiguous(), 4)).abs().max().item() < 1e-5


def test_short_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="3 x 4 heads"):
        short_self_attention(torch.zeros(2, 16, 50, device=DEVICE), 4)
    with pytest.raises(ValueError, match="exceed"):
        short_self_attention(torch.zeros(2, 65, 48, device=DEVICE), 2)
    with pytest.raises(ValueError, match=r"\(N, L, 3\*heads\*d\)"):
        short_self_attention(torch.zeros(2, 48, device=DEVICE), 2)


def _geglu_reference(x, weight, bias):
    x, weight, bias = x.double(), weight.double(), bias.double()
    h = weight.shape[0] // 2
    return F.linear(x, weight[:h], bias[:h]) * F.gelu(F.linear(x, weight[h:], bias[h:]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lead, k, h", [((3, 50), 40, 96), ((200,), 64, 64), ((2, 16, 8), 320, 160), ((130,), 72, 136),
                                        ((2, 128), 128, 256)])
def test_geglu_linear_equals_two_matmuls_and_gelu(lead, k, h, dtype):
    # (130,) x 72 -> 136: rows, the reduction and columns all end in partial tiles;
    # (2, 128) x 128 -> 256: every tile full, the mask-free path
    g = torch.Generator().manual_seed(k + h)
    x = torch.randn(*lead, k, generator=g).to(DEVICE, dtype)
    weight = (torch.randn(2 * h, k, generator=g) / k ** 0.5).to(DEVICE, dtype)
    bias = torch.randn(2 * h, generator=g).to(DEVICE, dtype)
    out = geglu_linear(x, weight, bias)
    assert out.shape == (*lead, h) and out.dtype == dtype
    expected = _geglu_reference(x, weight, bias)
    scale = expected.abs().max().item()
    assert (out.double() - expected).abs().max().item() < TOLERANCE[dtype] * max(1.0, scale)


def test_geglu_linear_uses_the_value_and_gate_halves_the_right_way_round():
    # gate half all very negative -> gelu(gate) == 0 -> output 0, whatever the value half
    k, h = 16, 32
    x = torch.ones(4, k, device=DEVICE)
    weight = torch.zeros(2 * h, k, device=DEVICE)
    bias = torch.cat([torch.full((h,), 5.0), torch.full((h,), -50.0)]).to(DEVICE)
    assert torch.count_nonzero(geglu_linear(x, weight, bias)) == 0
    bias = torch.cat([torch.full((h,), 5.0), torch.full((h,), 50.0)]).to(DEVICE)
    assert torch.allclose(geglu_linear(x, weight, bias), torch.full((4, h), 250.0, device=DEVICE))


def test_geglu_linear_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="weight"):
        geglu_linear(torch.zeros(3, 8, device=DEVICE), torch.zeros(10, 9, device=DEVICE), torch.zeros(10, device=DEVICE))
    with pytest.raises(ValueError, match="weight"):
        geglu_linear(torch.zeros(3, 8, device=DEVICE), torch.zeros(9, 8, device=DEVICE), torch.zeros(9, device=DEVICE))


@pytest.mark.parametrize("chosen", [(1, 1, 1), (4, 2, 2), (2, 8, 4), (16, 1, 4)])
def test_short_attention_launch_variants_agree(chosen):
    # sequences per program, heads per program and warps only change how work is split
    from latentsync.kernels.short_attention import launch

    g = torch.Generator().manual_seed(5)
    n, length, heads, head_dim = 37, 16, 8, 40
    qkv = torch.randn(n, length, 3 * heads * head_dim, generator=g).to(DEVICE)
    out = torch.empty(n, length, heads * head_dim, device=DEVICE)
    launch(qkv, out, heads, chosen=chosen)
    assert (out.double() - _sdpa_reference(qkv, heads)).abs().max().item() < 1e-5


def test_geglu_linear_configs_agree():
    from latentsync.kernels.geglu_linear import config, launch

    g = torch.Generator().manual_seed(6)
    x = torch.randn(130, 72, generator=g).to(DEVICE)
    weight = (torch.randn(2 * 136, 72, generator=g) / 72 ** 0.5).to(DEVICE)
    bias = torch.randn(2 * 136, generator=g).to(DEVICE)
    expected = _geglu_reference(x, weight, bias)
    for chosen in (config(64, 64, 32, 4, 3), config(128, 64, 64, 4, 4)):
        out = torch.empty(130, 136, device=DEVICE)
        launch(x, weight, bias, out, chosen=chosen)
        assert (out.double() - expected).abs().max().item() < 1e-4
