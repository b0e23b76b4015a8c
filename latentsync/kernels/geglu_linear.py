"""The GEGLU projection of a feed-forward as one Triton matmul with the gating fused in.

`GEGLU` computes `(x @ Wh.T + bh) * gelu(x @ Wg.T + bg)` with `W = [Wh; Wg]` of shape
`(2H, K)`. In PyTorch that is a matmul writing both halves (`M x 2H`), then a kernel
reading them back to write the product (`M x H`): at the UNet's top level (M = 131072
tokens per CFG chunk, H = 1280) about 1 GB of memory traffic per feed-forward for a
step that is pure bookkeeping. Here each program computes the same tile of both halves
in two accumulators and writes only the gated product.

Math: float32 accumulation, bias and exact (erf) GELU in float32, one rounding to the
output dtype at the end (PyTorch rounds the two halves to the dtype before the product).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton


@triton.jit
def _geglu_linear_body(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    H,
    K,
    stride_xm,
    stride_wn,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EXACT_FP32: tl.constexpr,
    EVEN: tl.constexpr,  # M, H and K are multiples of the blocks: no masks in the loop
):
    # Column tiles of one row block run next to each other, so the block of x they all
    # read stays in L2 (x is the large operand; W is a few MB at most).
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(H, BLOCK_N)
    pid_m = pid // n_tiles
    pid_n = pid % n_tiles
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < H
    x_tile = x_ptr + rows.to(tl.int64)[:, None] * stride_xm + ks[None, :]
    value_tile = w_ptr + cols[None, :] * stride_wn + ks[:, None]  # (BLOCK_K, BLOCK_N) view of Wh.T
    gate_tile = value_tile + H * stride_wn
    value = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN:
            a = tl.load(x_tile + k0)
            wv = tl.load(value_tile + k0)
            wg = tl.load(gate_tile + k0)
        else:
            k_ok = (k0 + ks) < K
            a = tl.load(x_tile + k0, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w_mask = k_ok[:, None] & col_ok[None, :]
            wv = tl.load(value_tile + k0, mask=w_mask, other=0.0)
            wg = tl.load(gate_tile + k0, mask=w_mask, other=0.0)
        if EXACT_FP32:
            value = tl.dot(a, wv, value, input_precision="ieee")
            gate = tl.dot(a, wg, gate, input_precision="ieee")
        else:
            value = tl.dot(a, wv, value)
            gate = tl.dot(a, wg, gate)
    value += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    gate += tl.load(b_ptr + H + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    gelu = 0.5 * gate * (1.0 + tl.math.erf(gate * 0.7071067811865476))
    out = (value * gelu).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :], out,
             mask=row_ok[:, None] & col_ok[None, :])


def config(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
                         num_warps=warps, num_stages=stages)


# Tile shapes tried on the first call of each (H, K) on a GPU: the four best of 19 swept
# on an H100 (benchmarks/kernel_tuning.py, 2026-11-26; the top level's projection, 131072
# x 320 -> 1280, took 0.64 ms against 0.98 for PyTorch's two matmuls and gating). The
# interpreter (CPU tests) runs the first.
CONFIGS = [
    config(128, 64, 64, 4, 3),
    config(128, 128, 64, 8, 3),
    config(256, 64, 64, 8, 3),
    config(128, 128, 32, 8, 4),
]
FP32_CONFIG = config(64, 64, 32, 4, 2)


def _is_even(m: int, h: int, k: int, configs) -> bool:
    """Every config's blocks divide M, H and K (then the kernel runs without masks)."""
    return all(m % c.kwargs["BLOCK_M"] == 0 and h % c.kwargs["BLOCK_N"] == 0 and k % c.kwargs["BLOCK_K"] == 0
               for c in configs)


_geglu_linear_tuned = triton.autotune(configs=CONFIGS, key=["H", "K", "EXACT_FP32", "EVEN"])(_geglu_linear_body)


def launch(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor,
           chosen: triton.Config | None = None) -> None:
    """Run the kernel on 2-D `x2 (M, K)` into `out (M, H)`: half precision on a GPU is
    autotuned over CONFIGS; otherwise, or when `chosen` is given (benchmarks/kernel_tuning.py),
    one config runs."""
    m, k = x2.shape
    h = out.shape[1]
    exact = x2.dtype == torch.float32
    args = (x2, weight, bias, out, m, h, k, x2.stride(0), weight.stride(0), out.stride(0))
    if x2.device.type == "cuda" and chosen is None and not exact:
        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(h, meta["BLOCK_N"]),)

        wrap_triton(_geglu_linear_tuned)[grid](*args, EXACT_FP32=exact, EVEN=_is_even(m, h, k, CONFIGS))
        return
    # float32 (CPU interpreter; rare fp32 GPU plans): one modest tile, no autotuning (fp32
    # operands at the fp16 tiles' sizes spill registers and compile for minutes)
    chosen = chosen or (FP32_CONFIG if exact else CONFIGS[0])
    grid = (triton.cdiv(m, chosen.kwargs["BLOCK_M"]) * triton.cdiv(h, chosen.kwargs["BLOCK_N"]),)
    wrap_triton(_geglu_linear_body)[grid](*args, EXACT_FP32=exact, EVEN=_is_even(m, h, k, [chosen]),
                                         num_warps=chosen.num_warps,
                                         num_stages=chosen.num_stages, **chosen.kwargs)


@triton_op("latentsync::geglu_linear", mutates_args=())
def geglu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x `(..., K)`, weight `(2H, K)`, bias `(2H,)` -> `(..., H)`:
    `(x @ Wh.T + bh) * gelu(x @ Wg.T + bg)`, exact GELU, `[Wh; Wg] = weight`."""
    *lead, k = x.shape
    two_h = weight.shape[0]
    if weight.dim() != 2 or weight.shape[1] != k or two_h % 2 or bias.shape != (two_h,):
        raise ValueError(f"geglu_linear: x (..., {k}) needs weight (2H, {k}) and bias (2H,), "
                         f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
    x2 = x.reshape(-1, k)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    m, h = x2.shape[0], two_h // 2
    out = x2.new_empty((m, h))
    launch(x2, weight, bias, out)
    return out.view(*lead, h)
