"""Self-attention over many short sequences in one Triton kernel (the motion modules).

The motion modules attend across the 16 frames of every pixel: at the UNet's top
level that is 2 x 4096 sequences of 16 tokens per chunk, with heads of width 40.
SDPA kernels tile 64-128 tokens per block, so these rows fill a sixth of every tile
and run several times slower than their memory traffic allows; packing sequences
into longer masked rows (`temporal_attention_pack`) recovers half of that.

This kernel reads the fused q/k/v projection `(N, L, 3*H*d)` as it comes out of the
matmul (no head transposes), computes each sequence's `L x L` scores, softmax and
weighted sum in registers, and writes `(N, L, H*d)` ready for the output projection:
one read of q, k, v and one write, which is the least the operation can cost.

Math: scores and softmax in float32, the probabilities cast to the inputs' dtype for
the second product (as flash attention does), scale 1/sqrt(d) (SDPA's default).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

MAX_LENGTH = 64  # longest sequence one program holds in registers (chunks are 16 frames)

# Launch parameters by padded head width: (sequences per program, heads per program,
# warps). Chosen on an H100 with benchmarks/kernel_tuning.py (2026-11-26): at the top
# level (8192 sequences, width 40 -> 64) 0.153 ms per call against 1.05 for SDPA and a
# memory floor of 0.100. The narrower levels' timings there are bound by the eager launch
# overhead, so their rows are only the fastest among near-equals.
LAUNCH = {16: (2, 1, 2), 32: (2, 1, 2), 64: (1, 2, 2), 128: (1, 1, 4), 256: (1, 1, 2)}

# Triton's interpreter (CPU tests) pays per program, so there few large programs run.
INTERPRETER_LAUNCH = (16, 1, 1)


@triton.jit
def _short_attention_kernel(
    qkv_ptr,
    out_ptr,
    n_sequences,
    qkv_stride_n,
    qkv_stride_l,
    out_stride_n,
    out_stride_l,
    scale,
    LENGTH: tl.constexpr,
    HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEADS_PER_PROGRAM: tl.constexpr,
    EXACT_FP32: tl.constexpr,
):
    # Program ids run head-group-fastest, so neighbouring programs read neighbouring bytes
    # of the same rows (one head is only d * 2 bytes of each token).
    pid = tl.program_id(0)
    groups = HEADS // HEADS_PER_PROGRAM
    seq = (pid // groups) * BLOCK_N + tl.arange(0, BLOCK_N)
    tok = tl.arange(0, BLOCK_L)
    dim = tl.arange(0, BLOCK_D)
    valid = (seq < n_sequences)[:, None, None] & (tok < LENGTH)[None, :, None] & (dim < HEAD_DIM)[None, None, :]
    rows = seq.to(tl.int64)[:, None, None] * qkv_stride_n + tok[None, :, None] * qkv_stride_l + dim[None, None, :]
    out_rows = seq.to(tl.int64)[:, None, None] * out_stride_n + tok[None, :, None] * out_stride_l + dim[None, None, :]
    inner = HEADS * HEAD_DIM
    for i in tl.static_range(HEADS_PER_PROGRAM):
        head = (pid % groups) * HEADS_PER_PROGRAM + i
        offsets = rows + head * HEAD_DIM
        q = tl.load(qkv_ptr + offsets, mask=valid, other=0.0)
        k = tl.load(qkv_ptr + offsets + inner, mask=valid, other=0.0)
        v = tl.load(qkv_ptr + offsets + 2 * inner, mask=valid, other=0.0)
        if EXACT_FP32:
            scores = tl.dot(q, tl.trans(k, (0, 2, 1)), input_precision="ieee")
        else:
            scores = tl.dot(q, tl.trans(k, (0, 2, 1)))
        scores = scores * scale
        if BLOCK_L != LENGTH:  # padded keys get no weight
            scores = tl.where((tok < LENGTH)[None, None, :], scores, float("-inf"))
        scores = scores - tl.max(scores, axis=2)[:, :, None]
        weights = tl.exp(scores)
        weights = weights / tl.sum(weights, axis=2)[:, :, None]
        if EXACT_FP32:
            out = tl.dot(weights, v, input_precision="ieee")
        else:
            out = tl.dot(weights.to(v.dtype), v)
        tl.store(out_ptr + out_rows + head * HEAD_DIM, out.to(out_ptr.dtype.element_ty), mask=valid)


def _check(qkv: torch.Tensor, heads: int) -> tuple[int, int, int]:
    if qkv.dim() != 3:
        raise ValueError(f"short_self_attention: qkv must be (N, L, 3*heads*d), got shape {tuple(qkv.shape)}")
    n, length, width = qkv.shape
    if heads < 1 or width % (3 * heads):
        raise ValueError(f"short_self_attention: last dim {width} is not 3 x {heads} heads x d")
    if length > MAX_LENGTH:
        raise ValueError(f"short_self_attention: sequences of {length} tokens exceed {MAX_LENGTH}")
    if qkv.stride(2) != 1:
        raise ValueError("short_self_attention: qkv's last dim must be contiguous")
    return n, length, width // (3 * heads)


def launch(qkv: torch.Tensor, out: torch.Tensor, heads: int,
           chosen: tuple[int, int, int] | None = None) -> None:
    """Run the kernel; `chosen` = (sequences per program, heads per program, warps)
    overrides the table (benchmarks/kernel_tuning.py)."""
    n, length, width = qkv.shape
    head_dim = width // (3 * heads)
    block_d = max(16, triton.next_power_of_2(head_dim))
    if chosen is None and qkv.device.type == "cpu":
        chosen = INTERPRETER_LAUNCH
    block_n, per_program, warps = chosen or LAUNCH.get(block_d, (1, 1, 8))
    per_program = per_program if heads % per_program == 0 else 1
    grid = (triton.cdiv(n, block_n) * (heads // per_program),)
    wrap_triton(_short_attention_kernel)[grid](
        qkv, out, n, qkv.stride(0), qkv.stride(1), out.stride(0), out.stride(1), 1.0 / math.sqrt(head_dim),
        LENGTH=length, HEADS=heads, HEAD_DIM=head_dim, BLOCK_L=max(16, triton.next_power_of_2(length)),
        BLOCK_D=block_d, BLOCK_N=block_n, HEADS_PER_PROGRAM=per_program, EXACT_FP32=qkv.dtype == torch.float32,
        num_warps=warps,
    )


@triton_op("latentsync::short_self_attention", mutates_args=())
def short_self_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """qkv `(N, L, 3*heads*d)` (q, k, v side by side, as one fused projection gives them)
    -> `(N, L, heads*d)`: each of the N sequences attends over its own L tokens."""
    n, length, head_dim = _check(qkv, heads)
    out = qkv.new_empty((n, length, heads * head_dim))
    launch(qkv, out, heads)
    return out
