"""Where the VAE's time goes: one chunk's encode (2 x 16 faces) and decode (16 latents).

The VAE costs about 0.34 s per video-second compiled in quality mode on an H100 (a tenth
of the run). This profiles the SD VAE (random weights; 512 px faces unless told
otherwise) with torch.profiler, eager and compiled through the pipeline's own
`prepare_vae` (latentsync.pipeline.levers), and sums CUDA kernel time by kind
(convolution, fused Triton kernels, normalisation, attention, copies, ...), with the
FLOP count and achieved TFLOP/s, so the next VAE lever can aim at what is really slow.
Prints tables and writes JSON.

    python benchmarks/vae_profile.py --json benchmarks/results/vae_profile.json
    python benchmarks/vae_profile.py --small --device cpu --modes eager   # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_stages import sync, timeit  # noqa: E402
from benchmarks.unet_profile import cuda_kernels, profile_forward, summarize_kernels  # noqa: E402
from latentsync.pipeline.vae import build_random_vae, decode_latents, encode_images  # noqa: E402
from latentsync.pipeline.levers import prepare_vae  # noqa: E402
from latentsync.testing.pipeline_helpers import bare_models, default_settings  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small random VAE at 64 px (CPU smoke test)")
    parser.add_argument("--modes", default="eager,compile", help="comma list of eager|compile")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--top-kernels", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/vae_profile.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    res = 64 if args.small else 512
    vae = build_random_vae("small" if args.small else "sd").to(device, dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    faces = (torch.rand(2 * args.frames, 3, res, res, generator=g) * 2 - 1).to(device, dtype)
    from torch.utils.flop_counter import FlopCounterMode

    models = bare_models(vae=vae)

    def vae_settings(compile_mode: str):
        """The run settings prepare_vae reads (the rest are the rules' defaults)."""
        return default_settings(device=device.type, precision="fp16" if dtype == torch.float16 else "fp32",
                                compile=compile_mode, cuda_graphs=False, vae_batch=args.frames)

    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "resolution": res, "frames": args.frames,
               "date": time.strftime("%Y-%m-%d"), "modes": {}}
    with torch.no_grad():
        options = prepare_vae(models, vae_settings("off"))
        latents = encode_images(vae, faces, options)[: args.frames].contiguous()
        work = {"encode": lambda: encode_images(vae, faces, options),
                "decode": lambda: decode_latents(vae, latents, options)}
        flops = {}
        for name, fn in work.items():
            with FlopCounterMode(display=False) as counter:
                fn()
            flops[name] = counter.get_total_flops()
        for mode in [m for m in args.modes.split(",") if m]:
            options = prepare_vae(models, vae_settings("default" if mode == "compile" else "off"))
            work = {"encode": lambda: encode_images(vae, faces, options),
                    "decode": lambda: decode_latents(vae, latents, options)}
            entry = {}
            for name, fn in work.items():
                start = time.perf_counter()
                fn()
                sync(device)
                first = time.perf_counter() - start
                seconds = timeit(fn, device, warmup=1, reps=3)
                prof = profile_forward(lambda: fn(), ((), {}), device)
                by_kind = summarize_kernels(prof) if device.type == "cuda" else {}
                top = cuda_kernels(prof)[:40] if device.type == "cuda" else []
                entry[name] = {"s": seconds, "first_call_s": first, "tflop": flops[name] / 1e12,
                               "tflops": flops[name] / seconds / 1e12, "ms_by_kernel_kind": by_kind,
                               "top_kernels": [{"name": n[:300], "ms": t, "count": c} for n, t, c in top]}
                label = f"{mode} {name} ({'2 x ' if name == 'encode' else ''}{args.frames} images)"
                print(f"\n{label}: {1000 * seconds:.1f} ms, {flops[name] / 1e12:.2f} TFLOP, "
                      f"{flops[name] / seconds / 1e12:.0f} TFLOP/s (first call {first:.1f} s)")
                total = sum(by_kind.values()) or 1.0
                for kind, value in sorted(by_kind.items(), key=lambda kv: -kv[1]):
                    print(f"  {kind:30s} {value:8.2f} ms  {100 * value / total:5.1f}%")
                for kernel, value, count in top[: args.top_kernels]:
                    print(f"    {value:7.2f} ms {count:4d}x  {kernel[:110]}")
            results["modes"][mode] = entry
        prepare_vae(models, vae_settings("off"))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
