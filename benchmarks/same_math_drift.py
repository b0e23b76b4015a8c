"""How far settings that keep the math drift from each other in half precision.

Settings such as `uncond_audio_attention: bias`, `cfg_shared_prefix` or the Triton
kernels compute the same function as upstream's path; in fp16 they still round
differently (other kernels, other batch shapes), and twenty denoising steps carry
those differences forward. The end-to-end benchmark's lower-face PSNR between two
such runs therefore measures that amplification as well, not a change of math.
This script puts numbers on it for one 16-frame chunk: the relative error of one
UNet forward and of the latents after a whole denoising loop, for each variant
against an fp32 run of the same weights and inputs, and against the fp16 baseline.
Random weights (as everywhere in benchmarks/).

    python benchmarks/same_math_drift.py --json benchmarks/results/same_math_drift.json
    python benchmarks/same_math_drift.py --small --device cpu --steps 4   # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentsync.kernels import triton_available  # noqa: E402
from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized  # noqa: E402
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, denoise  # noqa: E402

# name -> (model settings, denoise settings); the baseline is upstream's way.
VARIANTS = {
    "baseline (upstream's way)": ({}, {}),
    "baseline again (run-to-run)": ({}, {}),
    "uncond_audio_attention bias": ({}, {"uncond_audio_bias": True}),
    "bias + cfg_shared_prefix": ({}, {"uncond_audio_bias": True, "cfg_shared_prefix": True}),
    "temporal_attention_kernel triton": ({"temporal_attention_kernel": "triton"}, {}),
    "temporal_attention_pack 8": ({"temporal_attention_pack": 8}, {}),
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def configure(unet, model_settings: dict) -> None:
    unet.set_temporal_attention_kernel(model_settings.get("temporal_attention_kernel", "sdpa"))
    unet.set_temporal_attention_packing(model_settings.get("temporal_attention_pack", 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small random config (CPU smoke test)")
    parser.add_argument("--precision", default="fp16", choices=["fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps with CFG 1.5 on every step (quality)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/same_math_drift.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    latent = 8 if args.small else 64
    frames = 16
    torch.manual_seed(0)
    reference = UNet3DConditionModel.from_config(builtin_unet_config("small" if args.small else "1.6"))
    randomize_zero_initialized(reference)
    reference = reference.to(device).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    inputs = DenoiseInputs(
        noise=torch.randn(1, 4, frames, latent, latent, generator=g),
        mask=(torch.arange(latent) < latent // 2).float().view(1, 1, 1, latent, 1).expand(1, 1, frames, latent, latent),
        masked_latents=torch.randn(1, 4, frames, latent, latent, generator=g),
        ref_latents=torch.randn(1, 4, frames, latent, latent, generator=g),
        audio=torch.randn(frames, 50, 384, generator=g),
    )

    def moved(to_dtype):
        return DenoiseInputs(**{k: v.to(device, to_dtype) for k, v in vars(inputs).items()})

    base = dict(steps=args.steps, scheduler="ddim", guidance_scale=1.5, cfg_mode="all")

    def one_forward(unet, to_dtype, denoise_settings: dict):
        x = moved(to_dtype)
        sample = torch.cat([x.noise, x.mask, x.masked_latents, x.ref_latents], dim=1)
        kwargs = {}
        if denoise_settings.get("uncond_audio_bias"):
            kwargs["silent_audio_batch"] = 1
        if denoise_settings.get("cfg_shared_prefix"):
            kwargs["cfg_shared_prefix"] = True
        with torch.no_grad():
            return unet(torch.cat([sample, sample]), torch.tensor([500], device=device),
                        encoder_hidden_states=torch.cat([torch.zeros_like(x.audio), x.audio]), **kwargs).sample

    start = time.perf_counter()
    fp32_forward = one_forward(reference, torch.float32, {})
    fp32_latents = denoise(reference, moved(torch.float32), DenoiseSettings(**base))
    print(f"fp32 reference: {time.perf_counter() - start:.1f} s")
    unet = reference.to(dtype)  # the same weights, rounded

    rows, baseline_forward, baseline_latents = [], None, None
    for name, (model_settings, denoise_settings) in VARIANTS.items():
        if model_settings.get("temporal_attention_kernel") == "triton" and not triton_available(device.type):
            print(f"skipped {name}: Triton cannot run on {device.type} here")
            continue
        configure(unet, model_settings)
        forward = one_forward(unet, dtype, denoise_settings)
        latents = denoise(unet, moved(dtype), DenoiseSettings(**base, **denoise_settings))
        configure(unet, {})
        if baseline_forward is None:
            baseline_forward, baseline_latents = forward, latents
        rows.append({
            "variant": name,
            "forward_vs_fp32": rel_err(forward, fp32_forward),
            "forward_vs_baseline": rel_err(forward, baseline_forward),
            "latents_vs_fp32": rel_err(latents, fp32_latents),
            "latents_vs_baseline": rel_err(latents, baseline_latents),
        })

    print(f"\n{args.precision}, {args.steps} DDIM steps with CFG 1.5, one chunk of {frames} frames, "
          f"{latent}x{latent} latents; relative error")
    print(f"{'variant':36s} {'forward vs fp32':>16s} {'forward vs base':>16s} {'latents vs fp32':>16s} "
          f"{'latents vs base':>16s}")
    for row in rows:
        print(f"{row['variant']:36s} {row['forward_vs_fp32']:16.2e} {row['forward_vs_baseline']:16.2e} "
              f"{row['latents_vs_fp32']:16.2e} {row['latents_vs_baseline']:16.2e}")

    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": args.precision, "steps": args.steps, "frames": frames,
        "latent": latent, "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
