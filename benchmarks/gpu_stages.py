"""Per-stage GPU timings of the LatentSync pipeline at real size, lever by lever.

Runs the full-size 1.6 architecture (random weights: timing does not depend on
weight values) on one 16-frame chunk at 512 px and times, with warm-up and
medians: the VAE encode (masked + reference), the denoising loop for several
presets (steps, CFG schedule, DeepCache, scheduler), the VAE decode, each under
the levers (precision, attention backend, channels-last, torch.compile,
frames per batch). Prints a table and writes JSON.

    python benchmarks/gpu_stages.py --json benchmarks/results/gpu_stages.json
    python benchmarks/gpu_stages.py --small --device cpu   # smoke test on a CPU
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized  # noqa: E402
from latentsync.pipeline.denoise import DenoiseInputs, DenoiseSettings, DenoiseStats, denoise  # noqa: E402
from latentsync.pipeline.vae import VaeOptions, build_random_vae, decode_latents, encode_images  # noqa: E402

PRESETS = {
    # name: denoise settings (the same math as upstream for "quality")
    "quality_20ddim_cfg": dict(steps=20, scheduler="ddim", guidance_scale=1.5, cfg_mode="all"),
    "steps10_cfg": dict(steps=10, scheduler="ddim", guidance_scale=1.5, cfg_mode="all"),
    "deepcache3_20_cfg": dict(steps=20, scheduler="ddim", guidance_scale=1.5, cfg_mode="all", deepcache=True),
    "cfg_first30_20": dict(steps=20, scheduler="ddim", guidance_scale=1.5, cfg_mode="first_fraction", cfg_fraction=0.3),
    "dpmpp10_cfg_first30_dc2": dict(steps=10, scheduler="dpmpp", guidance_scale=1.5, cfg_mode="first_fraction",
                                    cfg_fraction=0.3, deepcache=True, deepcache_interval=2),
    "preview_dpmpp6_nocfg_dc2": dict(steps=6, scheduler="dpmpp", guidance_scale=1.0, cfg_mode="off",
                                     deepcache=True, deepcache_interval=2),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, warmup=1, reps=3):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unet_flops(unet, sample, audio):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        unet(sample, torch.tensor(500, device=sample.device), encoder_hidden_states=audio)
    return counter.get_total_flops()


def make_inputs(k, frames, latent, device, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    return DenoiseInputs(
        noise=rnd(1, 4, 1, latent, latent).expand(k, 4, frames, latent, latent).contiguous(),
        mask=torch.ones(k, 1, frames, latent, latent, device=device, dtype=dtype),
        masked_latents=rnd(k, 4, frames, latent, latent),
        ref_latents=rnd(k, 4, frames, latent, latent),
        audio=rnd(k * frames, 50, 384),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="small random config (CPU smoke test)")
    parser.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--levers", default="eager,channels_last,flash,efficient,compile",
                        help="comma list: eager, channels_last, flash, efficient, math, compile, compile_max, "
                        "compile_graphs, compile_max_graphs")
    parser.add_argument("--vae-levers", default="eager",
                        help="comma list: eager, channels_last, compile, compile_max, channels_last+compile, each optionally "
                             "@N images per VAE call (the pipeline's own prepare_vae)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/gpu_stages.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    config = builtin_unet_config("small" if args.small else "1.6")
    res = 64 if args.small else 512
    latent = res // 8
    frames = 16
    unet = UNet3DConditionModel.from_config(config)
    randomize_zero_initialized(unet)
    unet = unet.to(device, dtype).eval().requires_grad_(False)
    vae = build_random_vae("small" if args.small else "sd").to(device, dtype)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
               "torch": torch.__version__, "precision": precision, "resolution": res, "frames": frames,
               "date": time.strftime("%Y-%m-%d"), "stages": [], "unet": []}
    rows = []

    # ---- VAE, lever by lever, through the pipeline's own prepare_vae (latentsync.pipeline.levers)
    from latentsync.faces import face_mask
    from latentsync.pipeline.face_synthesis import decode_start_row
    from latentsync.pipeline.levers import memory_format_name, needs_fresh_models, prepare_vae
    from latentsync.testing.pipeline_helpers import bare_models, default_settings

    def vae_run_settings(compile_mode="off", channels_last=False, vae_batch=16):
        return default_settings(device=device.type, precision=precision, compile=compile_mode, cuda_graphs=False,
                                channels_last=channels_last, vae_batch=vae_batch)

    models = bare_models(unet, vae)
    images = torch.randn(frames, 3, res, res, device=device, dtype=dtype)
    mask_row = decode_start_row(face_mask(res), latent)
    results["vae"] = []
    t_enc = t_dec = None
    for lever in [lv for lv in args.vae_levers.split(",") if lv]:
        # "<lever>@N" encodes/decodes N images per VAE call (vae_batch; default 16)
        lever_name, _, batch = lever.partition("@")
        compile_mode = "max-autotune" if "compile_max" in lever_name else "default" if "compile" in lever_name else "off"
        vae_settings = vae_run_settings(compile_mode, "channels_last" in lever_name, int(batch or 16))
        if needs_fresh_models(models, vae_settings):
            # graphs compiled for the other memory format: the runner would load fresh models;
            # this script keeps its modules and drops torch's compiled graphs instead
            torch._dynamo.reset()
            models.compiled.clear()
        vae_opts = prepare_vae(models, vae_settings)
        models.memory_format = memory_format_name(vae_settings)  # prepare_unet records it in a run
        pair = torch.cat([images, images])
        start = time.perf_counter()
        lat = encode_images(vae, pair, vae_opts)[:frames].contiguous()
        decode_latents(vae, lat, vae_opts)
        decode_latents(vae, lat[:, :, mask_row:].contiguous(), vae_opts)
        sync(device)
        first = time.perf_counter() - start
        enc = timeit(lambda: encode_images(vae, pair, vae_opts), device, reps=args.reps)
        dec = timeit(lambda: decode_latents(vae, lat, vae_opts), device, reps=args.reps)
        dec_mask = timeit(lambda: decode_latents(vae, lat[:, :, mask_row:].contiguous(), vae_opts), device,
                          reps=args.reps)
        results["vae"].append({"lever": lever, "encode_2x16_s": enc, "decode_16_s": dec,
                               "decode_16_mask_rows_s": dec_mask, "mask_rows": latent - mask_row,
                               "first_calls_s": first})
        rows += [("vae_encode_2x16", lever, enc), ("vae_decode_16", lever, dec),
                 (f"vae_decode_16 ({latent - mask_row} rows)", lever, dec_mask)]
        if t_enc is None:
            t_enc, t_dec = enc, dec
    prepare_vae(models, vae_run_settings())  # eager and contiguous again for the UNet levers below

    # ---- one UNet forward, lever by lever
    inputs = make_inputs(2, frames, latent, device, dtype)
    sample = torch.cat([torch.cat([inputs.noise] * 1), inputs.mask, inputs.masked_latents, inputs.ref_latents], 1)
    audio = inputs.audio
    t = torch.tensor(500, device=device)
    flops = unet_flops(unet, sample, audio)
    results["unet_flops_per_forward_batch2"] = flops
    levers = [lv for lv in args.levers.split(",") if lv]
    base_time = None
    for lever in levers:
        model = unet
        if lever == "channels_last":
            model = unet.to(memory_format=torch.channels_last)
        if lever in ("flash", "efficient", "math"):
            unet.set_attention_backend(lever)
        if lever.startswith("compile"):
            mode = {"compile": None, "compile_max": "max-autotune-no-cudagraphs", "compile_graphs": "reduce-overhead",
                    "compile_max_graphs": "max-autotune"}[lever]
            model = torch.compile(unet, mode=mode, dynamic=False)
        start = time.perf_counter()
        try:
            model(sample, t, encoder_hidden_states=audio)
            sync(device)
            first = time.perf_counter() - start
            seconds = timeit(lambda: model(sample, t, encoder_hidden_states=audio), device, reps=args.reps)
        except Exception as exc:  # a lever that does not run here is a result too
            results["unet"].append({"lever": lever, "error": repr(exc)[:300]})
            rows.append(("unet_forward_b2x16", lever, float("nan")))
            unet.set_attention_backend("auto")
            continue
        unet.set_attention_backend("auto")
        if lever == "channels_last":
            unet.to(memory_format=torch.contiguous_format)
        base_time = base_time or seconds
        results["unet"].append({"lever": lever, "seconds": seconds, "first_call_s": first,
                                "tflops": flops / seconds / 1e12})
        rows.append(("unet_forward_b2x16", lever, seconds))

    # ---- denoise loop per preset (eager, default attention)
    for name in [p for p in args.presets.split(",") if p]:
        settings = DenoiseSettings(**PRESETS[name])
        stats = DenoiseStats()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timeit(lambda: denoise(unet, inputs if settings.cfg_steps() else inputs, settings), device,
                         warmup=1, reps=max(1, args.reps - 1))
        denoise(unet, inputs, settings, stats=stats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        per_video_s = (seconds / 2 + t_enc / 2 + t_dec) / (frames / 25)  # inputs hold 2 chunks
        results["stages"].append({"preset": name, "settings": PRESETS[name], "denoise_s_per_2chunks": seconds,
                                  "unet_calls": stats.unet_calls, "cached_calls": stats.cached_calls,
                                  "gpu_s_per_video_s": per_video_s, "peak_vram_gib": peak})
        rows.append((f"denoise[{name}] 2 chunks", "eager", seconds))

    print(f"{'stage':40s} {'lever':16s} {'seconds':>9s}")
    for stage, lever, seconds in rows:
        print(f"{stage:40s} {lever:16s} {seconds:9.3f}")
    for st in results["stages"]:
        print(f"{st['preset']:32s} GPU s per video-s {st['gpu_s_per_video_s']:.2f}  peak {st['peak_vram_gib']}")
    print(f"UNet GFLOP per forward (batch 2 x 16 frames): {flops / 1e9:.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
