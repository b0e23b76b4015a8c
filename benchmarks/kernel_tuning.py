"""Launch parameters of the Triton kernels (latentsync/kernels), swept at the 1.6 UNet's shapes.

For each shape the motion modules' attention and the feed-forwards' GEGLU take in one
CFG chunk (2 x 16 frames at 512 px), times every candidate launch of our kernel and
PyTorch's way of doing the same work, and prints the best. The winners go into
`short_attention.LAUNCH` and `geglu_linear.CONFIGS` by hand. Needs a CUDA GPU.

    python benchmarks/kernel_tuning.py --json benchmarks/results/kernel_tuning.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (sequences, frames, heads, head width) and (rows, K, H) per UNet level, CFG chunk of 16 frames
ATTENTION_SHAPES = [(8192, 16, 8, 40), (2048, 16, 8, 80), (512, 16, 8, 160), (128, 16, 8, 160)]
GEGLU_SHAPES = [(131072, 320, 1280), (32768, 640, 2560), (8192, 1280, 5120), (2048, 1280, 5120)]


def bench_ms(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=50))


def sweep_attention(dtype) -> list[dict]:
    import triton

    from latentsync.kernels.short_attention import LAUNCH, launch

    rows = []
    for n, length, heads, dim in ATTENTION_SHAPES:
        qkv = torch.randn(n, length, 3 * heads * dim, device="cuda", dtype=dtype)
        out = torch.empty(n, length, heads * dim, device="cuda", dtype=dtype)
        q, k, v = (x.view(n, length, heads, dim).transpose(1, 2) for x in qkv.chunk(3, dim=-1))
        sdpa_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        bytes_moved = qkv.numel() * qkv.element_size() + out.numel() * out.element_size()
        block_d = max(16, triton.next_power_of_2(dim))
        results = {}
        for block_n, per_program, warps in itertools.product((1, 2, 4, 8), (1, 2, 4), (1, 2, 4, 8)):
            if block_n * block_d > 1024 or heads % per_program:
                continue
            try:
                launch(qkv, out, heads, chosen=(block_n, per_program, warps))
                results[(block_n, per_program, warps)] = bench_ms(lambda: launch(qkv, out, heads,
                                                                                 chosen=(block_n, per_program, warps)))
            except Exception as error:  # out of registers / shared memory for this launch
                if "illegal memory access" in str(error):  # the CUDA context is lost: stop here
                    raise
                results[(block_n, per_program, warps)] = None
                print(f"  {(block_n, per_program, warps)}: {str(error).splitlines()[0][:100]}")
        best = min((v, key) for key, v in results.items() if v is not None)
        current = results.get(LAUNCH.get(block_d))
        row = {"shape": [n, length, heads, dim], "sdpa_ms": sdpa_ms, "best": list(best[1]), "best_ms": best[0],
               "current": list(LAUNCH.get(block_d, ())), "current_ms": current,
               "ideal_ms": bytes_moved / 3.35e12 * 1e3,
               "all": [{"launch": list(k), "ms": v} for k, v in sorted(results.items(), key=lambda kv: kv[1] or 1e9)]}
        rows.append(row)
        print(f"attention {n}x{length} h{heads} d{dim}: sdpa {sdpa_ms:.3f} ms, ours now {current or float('nan'):.3f}, "
              f"best {best[0]:.3f} at {best[1]} (memory floor {row['ideal_ms']:.3f})")
    return rows


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); each program keeps two BLOCK_M x BLOCK_N
# accumulators (value and gate), so 128 x 128 here is a 128 x 256 tile of a plain matmul.
GEGLU_CANDIDATES = [
    (64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (64, 128, 64, 4, 4), (128, 64, 64, 4, 3), (128, 64, 64, 4, 4),
    (128, 64, 32, 4, 4), (128, 128, 32, 8, 3), (128, 128, 32, 8, 4), (128, 128, 64, 8, 2), (128, 128, 64, 8, 3),
    (128, 128, 64, 8, 4), (128, 128, 64, 4, 3), (256, 64, 64, 8, 3), (256, 64, 32, 8, 4), (64, 256, 64, 8, 3),
    (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (256, 128, 32, 8, 3), (128, 256, 32, 8, 4),
]


def sweep_geglu(dtype) -> list[dict]:
    from latentsync.kernels.geglu_linear import CONFIGS, config, launch

    rows = []
    for m, k, h in GEGLU_SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        weight = torch.randn(2 * h, k, device="cuda", dtype=dtype) / k ** 0.5
        bias = torch.randn(2 * h, device="cuda", dtype=dtype)
        out = torch.empty(m, h, device="cuda", dtype=dtype)

        def torch_way():
            gate = F.gelu(F.linear(x, weight[h:], bias[h:]))
            return F.linear(x, weight[:h], bias[:h]).mul_(gate)

        torch_ms = bench_ms(torch_way)
        matmul_ms = bench_ms(lambda: F.linear(x, weight, bias))  # cuBLAS, both halves, no gating
        results = {}
        for candidate in GEGLU_CANDIDATES:
            chosen = config(*candidate)
            try:
                launch(x, weight, bias, out, chosen=chosen)
                results[candidate] = bench_ms(lambda: launch(x, weight, bias, out, chosen=chosen))
            except Exception as error:
                results[candidate] = None
                print(f"  {candidate}: {str(error).splitlines()[0][:100]}")
        best = min((v, key) for key, v in results.items() if v is not None)
        tuned_ms = bench_ms(lambda: launch(x, weight, bias, out))  # autotuned over CONFIGS
        flop = 2 * m * k * 2 * h
        row = {"shape": [m, k, h], "torch_ms": torch_ms, "cublas_matmul_only_ms": matmul_ms, "autotuned_ms": tuned_ms,
               "best": list(best[1]), "best_ms": best[0], "best_tflops": flop / best[0] / 1e9,
               "all": [{"config": list(c), "ms": v} for c, v in sorted(results.items(), key=lambda kv: kv[1] or 1e9)]}
        rows.append(row)
        print(f"geglu {m}x{k}->{h}: torch {torch_ms:.3f} ms (its matmul alone {matmul_ms:.3f}), autotuned "
              f"{tuned_ms:.3f}, best {best[0]:.3f} at {best[1]} ({row['best_tflops']:.0f} TFLOP/s); "
              f"configs now: {[list(c.kwargs.values()) + [c.num_warps, c.num_stages] for c in CONFIGS][:2]}...")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["attention", "geglu"], default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/kernel_tuning.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_tuning needs a CUDA GPU")
        return 2
    dtype = torch.float16
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "dtype": "fp16"}
    if args.only in (None, "attention"):
        results["attention"] = sweep_attention(dtype)
    if args.only in (None, "geglu"):
        results["geglu"] = sweep_geglu(dtype)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
