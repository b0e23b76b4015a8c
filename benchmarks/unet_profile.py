"""Where one UNet forward spends its GPU time: by kind of work, eager and compiled.

Profiles one forward of the full-size 1.6 UNet (random weights; CFG batch 2 x 16 frames
at 512 px unless told otherwise) with torch.profiler and sums CUDA kernel time by kind:
convolution, matmul (linear layers), attention (split into spatial self-attention,
audio cross-attention and temporal attention by the query/key lengths in eager mode),
normalisation, fused Triton kernels, copies and the rest. Then times each attention shape
the forward uses under every SDPA backend, so a faster kernel choice shows up as ms per
forward. Prints tables and writes JSON.

    python benchmarks/unet_profile.py --json benchmarks/results/unet_profile.json
    python benchmarks/unet_profile.py --small --device cpu --modes eager   # CPU smoke test
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_stages import sync, timeit  # noqa: E402
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized  # noqa: E402

SDPA_OPS = ("scaled_dot_product", "sdpa", "_efficient_attention", "_flash_attention", "_cudnn_attention")


def triton_runs(device) -> bool:
    from latentsync.kernels import triton_available

    return triton_available(device.type)


def median_time(fn, device, reps: int = 5, warmup: int = 2) -> float:
    return timeit(fn, device, warmup=warmup, reps=reps)


def kernel_kind(name: str) -> str:
    """Kind of a CUDA kernel (compiled mode: only kernel names are known)."""
    low = name.lower()
    if any(k in low for k in ("fmha", "flash", "attention", "sdpa", "attn")):
        return "attention"
    if "geglu" in low:  # latentsync.kernels.geglu_linear: the GEGLU matmul with its gating
        return "matmul"
    if low.startswith("triton"):
        return "triton fused"
    if any(k in low for k in ("conv", "fprop", "dgrad", "implicit_gemm", "winograd", "xmma_fprop")):
        return "convolution"
    if any(k in low for k in ("gemm", "cutlass", "nvjet", "matmul", "xmma")):
        return "matmul"
    if any(k in low for k in ("norm", "welford", "reduce")):
        return "norm / reduce"
    if any(k in low for k in ("copy", "transpose", "cat", "nchwtonhwc", "nhwctonchw")):
        return "copy / layout"
    if "elementwise" in low or "vectorized" in low:
        return "elementwise"
    return "other"


def attention_kind(shapes) -> str:
    """Eager mode: the kind of an SDPA call from its query and key shapes (N, heads, L, d)."""
    try:
        q, k = shapes[0], shapes[1]
        lq, lk = q[-2], k[-2]
    except (IndexError, TypeError):
        return "attention"
    if len(shapes) > 3 and shapes[3]:
        return f"attention: temporal, packed (L={lq})"
    if lq == lk and lq <= 32:
        return f"attention: temporal (L={lq})"
    if lq == lk:
        return f"attention: spatial self (L={lq}, d={q[-1]})"
    return f"attention: audio cross (L={lq}, S={lk})"


def profile_forward(model, args_, device):
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        model(*args_[0], **args_[1])
        sync(device)
    return prof


def device_time_us(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total", "self_cpu_time_total"):
        value = getattr(event, attr, None)
        if value:
            return float(value)
    return 0.0


def summarize_eager(prof, device) -> dict[str, float]:
    """ms by kind from aten ops (self device time, attention split by shapes)."""
    totals: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        name = event.key
        us = device_time_us(event)
        if not us or not name.startswith("aten::"):
            continue
        if any(op in name for op in SDPA_OPS):
            kind = attention_kind(event.input_shapes)
        elif "convolution" in name or "conv2d" in name or "cudnn_conv" in name:
            kind = "convolution"
        elif name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"):
            kind = "matmul"
        elif "norm" in name or "var_mean" in name or name in ("aten::mean", "aten::sum", "aten::rsqrt"):
            kind = "norm / reduce"
        elif name in ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::_to_copy"):
            kind = "copy / layout"
        else:
            kind = "elementwise / other"
        totals[kind] += us / 1000.0
    return dict(totals)


def is_annotation(name: str) -> bool:
    """GPU-timeline ranges of record_function (compiled regions, graph calls): not kernels."""
    return name.startswith(("##", "Torch-Compiled", "CompiledFunction", "aten::", "cuda", "Memcpy", "Memset")) \
        or "Compiled" in name or "Graph" in name


def cuda_kernels(prof) -> list[tuple[str, float, int]]:
    """(kernel name, total ms, count) of every CUDA kernel, largest first."""
    rows = []
    for event in prof.key_averages():
        if str(getattr(event, "device_type", "")).endswith("CUDA") and not is_annotation(event.key):
            rows.append((event.key, device_time_us(event) / 1000.0, event.count))
    return sorted(rows, key=lambda row: -row[1])


def summarize_kernels(prof) -> dict[str, float]:
    totals: dict[str, float] = collections.defaultdict(float)
    for name, ms, _ in cuda_kernels(prof):
        totals[kernel_kind(name)] += ms
    return dict(totals)


def attention_shapes(unet, sample, t, audio):
    """Every distinct (q, k, v) shape the forward passes to SDPA, with its count."""
    seen: collections.Counter = collections.Counter()
    original = F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen[(tuple(q.shape), tuple(k.shape), tuple(v.shape))] += 1
        return original(q, k, v, *a, **kw)

    F.scaled_dot_product_attention = spy
    try:
        unet(sample, t, encoder_hidden_states=audio)
    finally:
        F.scaled_dot_product_attention = original
    return seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small random config (CPU smoke test)")
    parser.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch", type=int, default=2, help="UNet batch in chunks (2 = one chunk with CFG)")
    parser.add_argument("--modes", default="eager,compile", help="comma list of eager|compile, each optionally +channels_last, +tattn (Triton temporal "
                        "attention), +geglu (Triton GEGLU matmul), +packN (N pixel sequences per "
                        "temporal attention row), +bias (uncond_audio_attention: bias), +prefix (cfg_shared_prefix)")
    parser.add_argument("--backends", default="auto,cudnn,flash,efficient,math",
                        help="SDPA backends timed per attention shape ('' skips the attention table)")
    parser.add_argument("--packs", type=lambda v: [int(x) for x in v.split(",") if x], default=[4, 8, 16],
                        help="packing factors timed for the temporal attention shapes")
    parser.add_argument("--no-geglu-table", dest="geglu_table", action="store_false",
                        help="skip timing each GEGLU projection shape, torch vs the Triton kernel")
    parser.add_argument("--top-kernels", type=int, default=15, help="print the N longest kernels of each mode")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/unet_profile.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    torch.backends.cudnn.benchmark = True
    res = 64 if args.small else 512
    latent, frames = res // 8, 16
    unet = UNet3DConditionModel.from_config(builtin_unet_config("small" if args.small else "1.6"))
    randomize_zero_initialized(unet)
    unet = unet.to(device, dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    # A CFG batch as the denoising loop builds it: the same input twice, zero audio first.
    half = max(args.batch // 2, 1)
    sample = torch.randn(half, 13, frames, latent, latent, generator=g).repeat(args.batch // half, 1, 1, 1, 1)
    sample = sample.to(device, dtype)
    audio = torch.randn(args.batch * frames, 50, 384, generator=g).to(device, dtype)
    if args.batch % 2 == 0:
        audio[: half * frames] = 0
    t = torch.tensor(500, device=device)

    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, t, encoder_hidden_states=audio)
    flops = counter.get_total_flops()
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": precision, "batch": args.batch, "frames": frames,
        "resolution": res, "date": time.strftime("%Y-%m-%d"), "tflop_per_forward": flops / 1e12,
        "modes": {}, "attention": [],
    }

    with torch.no_grad():
        for mode in [m for m in args.modes.split(",") if m]:
            model = unet
            parts = mode.split("+")
            if "channels_last" in parts:
                unet.to(memory_format=torch.channels_last)
            packs = [int(p[4:]) for p in parts if p.startswith("pack")]
            unet.set_temporal_attention_packing(packs[0] if packs else 1)
            unet.set_temporal_attention_kernel("triton" if "tattn" in parts else "sdpa")
            unet.set_geglu_kernel("triton" if "geglu" in parts else "torch")
            kwargs = {"encoder_hidden_states": audio}
            if "bias" in parts:  # uncond_audio_attention: bias
                kwargs["silent_audio_batch"] = args.batch // 2
            if "prefix" in parts:  # cfg_shared_prefix: true
                kwargs["cfg_shared_prefix"] = True
            if "compile" in parts:
                torch._dynamo.reset()
                model = torch.compile(unet, dynamic=False)
            start = time.perf_counter()
            model(sample, t, **kwargs)
            sync(device)
            first = time.perf_counter() - start
            ms = 1000 * median_time(lambda: model(sample, t, **kwargs), device)
            prof = profile_forward(model, ((sample, t), kwargs), device)
            by_kind = summarize_eager(prof, device) if "compile" not in parts else summarize_kernels(prof)
            if device.type == "cuda" and "compile" not in parts:
                by_kernel = summarize_kernels(prof)
            else:
                by_kernel = by_kind
            top = cuda_kernels(prof)[:40] if device.type == "cuda" else []
            results["modes"][mode] = {"ms_per_forward": ms, "first_call_s": first,
                                      "tflops": flops / (ms / 1000) / 1e12, "ms_by_kind": by_kind,
                                      "ms_by_kernel_kind": by_kernel,
                                      "top_kernels": [{"name": n[:300], "ms": t, "count": c} for n, t, c in top]}
            unet.to(memory_format=torch.contiguous_format)
            unet.set_temporal_attention_packing(1)
            unet.set_temporal_attention_kernel("sdpa")
            unet.set_geglu_kernel("torch")
            print(f"\n{mode}: {ms:.1f} ms per forward, {flops / (ms / 1000) / 1e12:.0f} TFLOP/s "
                  f"(first call {first:.1f} s)")
            total = sum(by_kind.values()) or 1.0
            for kind, value in sorted(by_kind.items(), key=lambda kv: -kv[1]):
                print(f"  {kind:45s} {value:8.2f} ms  {100 * value / total:5.1f}%")
            for name, value, count in top[: args.top_kernels]:
                print(f"    {value:7.2f} ms {count:4d}x  {name[:110]}")

        # ---- every attention shape of the forward, under every backend
        backends = [b for b in args.backends.split(",") if b]
        if backends:
            from latentsync.models.unet3d import ATTENTION_BACKENDS
            from torch.nn.attention import sdpa_kernel

            shapes = attention_shapes(unet, sample, t, audio)
            print(f"\n{'attention shape q / k':48s} {'calls':>5s} " + " ".join(f"{b:>10s}" for b in backends)
                  + "   (ms per forward)")
            for (qs, ks, vs), calls in sorted(shapes.items(), key=lambda kv: -kv[0][0][2] * kv[0][1][2]):
                variants = [(1, qs, ks)]
                if qs == ks and qs[-2] <= 32:  # temporal: also packed, as packed_self_attention does
                    variants += [(p, (qs[0] // p, qs[1], qs[2] * p, qs[3]), (ks[0] // p, ks[1], ks[2] * p, ks[3]))
                                 for p in args.packs if qs[0] % p == 0]
                for pack, q_shape, k_shape in variants:
                    q = torch.randn(q_shape, device=device, dtype=dtype)
                    k = torch.randn(k_shape, device=device, dtype=dtype)
                    v = torch.randn(k_shape, device=device, dtype=dtype)
                    mask = None
                    if pack > 1:
                        seq = torch.arange(q_shape[2], device=device) // qs[2]
                        mask = seq[:, None] == seq[None, :]
                    row = {"q": qs, "k": ks, "calls": calls, "pack": pack, "ms_per_forward": {}}
                    for backend in backends:
                        chosen = ATTENTION_BACKENDS[backend]
                        try:
                            def run(chosen=chosen):
                                if chosen is None:
                                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                                with sdpa_kernel(list(chosen)):
                                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                            row["ms_per_forward"][backend] = 1000 * calls * median_time(run, device)
                        except RuntimeError as exc:
                            row["ms_per_forward"][backend] = None
                            row.setdefault("errors", {})[backend] = str(exc).splitlines()[0][:200]
                    results["attention"].append(row)
                    cells = " ".join(f"{v:10.2f}" if v is not None else f"{'n/a':>10s}"
                                     for v in row["ms_per_forward"].values())
                    label = f"{qs} / {ks[-2]}" + (f" packed x{pack}" if pack > 1 else "")
                    print(f"{label:48s} {calls:5d} {cells}")
                if qs == ks and qs[-2] <= 32 and triton_runs(device):
                    from latentsync.kernels.short_attention import short_self_attention

                    n, heads, length, dim = qs
                    qkv = torch.randn(n, length, 3 * heads * dim, device=device, dtype=dtype)
                    ms = 1000 * calls * median_time(lambda: short_self_attention(qkv, heads), device)
                    results["attention"].append({"q": qs, "k": ks, "calls": calls, "kernel": "triton",
                                                 "ms_per_forward": {"triton": ms}})
                    print(f"{f'{qs} / {ks[-2]} Triton kernel (from fused qkv)':48s} {calls:5d} {ms:10.2f}")

        # ---- every GEGLU projection of the forward: two matmuls + gating vs the fused kernel
        if args.geglu_table and triton_runs(device):
            from latentsync.kernels.geglu_linear import geglu_linear
            from latentsync.models.unet_blocks import GEGLU

            seen = collections.Counter()
            hooks = [m.register_forward_hook(lambda mod, inp, out: seen.update(
                [(inp[0].numel() // inp[0].shape[-1], inp[0].shape[-1], mod.dim_out)]))
                for m in unet.modules() if isinstance(m, GEGLU)]
            unet(sample, t, encoder_hidden_states=audio)
            for hook in hooks:
                hook.remove()
            results["geglu"] = []
            print(f"\n{'GEGLU rows x K -> H':32s} {'calls':>5s} {'torch':>10s} {'triton':>10s}   (ms per forward)")
            for (rows, k, h), calls in sorted(seen.items(), key=lambda kv: -kv[0][0] * kv[0][2]):
                x = torch.randn(rows, k, device=device, dtype=dtype)
                module = GEGLU(k, h).to(device, dtype)
                torch_ms = 1000 * calls * median_time(lambda: module(x), device)
                fused_ms = 1000 * calls * median_time(lambda: geglu_linear(x, module.proj.weight, module.proj.bias),
                                                      device)
                results["geglu"].append({"rows": rows, "k": k, "h": h, "calls": calls,
                                         "ms_per_forward": {"torch": torch_ms, "triton": fused_ms}})
                print(f"{f'{rows} x {k} -> {h}':32s} {calls:5d} {torch_ms:10.2f} {fused_ms:10.2f}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
