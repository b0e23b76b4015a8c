"""Model load from an official-layout weights folder, in a fresh process per repetition.

Writes a folder in the official layout (`latentsync_unet.pt` as `{"state_dict": ...}` in
float32 as the hub ships it, `whisper/tiny.pt`, `vae/` as safetensors, `version.txt`) with
seeded random weights of the chosen architecture, then times `latentsync.weights.load_models`
in fresh processes (what `latentsync-run` pays once per process): the UNet is built on the
meta device and takes the checkpoint's tensors through mmap, the VAE loads from
safetensors. Also times random-weight construction (`--weights random`), which draws every
parameter on the CPU.

    python benchmarks/model_load.py --version 1.6 --device cuda --reps 3 --json r.json
    python benchmarks/model_load.py --version small --device cpu --reps 2          # CI-sized
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_folder(folder: Path, version: str) -> Path:
    import torch

    from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
    from latentsync.models.whisper_encoder import random_whisper_encoder
    from latentsync.pipeline.vae import build_random_vae

    marker = folder / "version.txt"
    if marker.exists():
        return folder
    (folder / "whisper").mkdir(parents=True, exist_ok=True)
    with torch.device("cpu"):
        unet = UNet3DConditionModel.from_config(builtin_unet_config(version))
    randomize_zero_initialized(unet)
    torch.save({"state_dict": unet.state_dict()}, folder / "latentsync_unet.pt")
    del unet
    encoder = random_whisper_encoder()
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4}
    torch.save({"dims": dims, "model_state_dict": encoder.openai_state_dict()}, folder / "whisper" / "tiny.pt")
    build_random_vae("small" if version == "small" else "sd").save_pretrained(folder / "vae", safe_serialization=True)
    marker.write_text(version + "\n")
    return folder


def child(weights: str, device: str, cast_on: str) -> None:
    started = time.perf_counter()
    import torch

    import latentsync.weights
    # the loader imports these on first use (diffusers among them: seconds on some hosts);
    # a `latentsync-run` process has imported them before it loads, so they are not "load"
    import latentsync.models.unet3d  # noqa: F401
    import latentsync.models.unet_loading  # noqa: F401
    import latentsync.models.whisper_encoder  # noqa: F401
    import latentsync.pipeline.vae  # noqa: F401
    from latentsync.weights import load_models

    latentsync.weights.LOAD_CAST_ON = cast_on
    imported = time.perf_counter()
    if device == "cuda":
        torch.zeros(1, device=device)  # the CUDA context: paid once per process, whatever loads
        torch.cuda.synchronize()
    ready = time.perf_counter()
    dtype = torch.float16 if device == "cuda" else torch.float32
    load_models(weights, device=device, dtype=dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    done = time.perf_counter()
    print(json.dumps({"imports_s": round(imported - started, 3), "device_init_s": round(ready - imported, 3),
                      "load_s": round(done - ready, 3)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("WEIGHTS", "DEVICE", "CAST_ON"), help=argparse.SUPPRESS)
    parser.add_argument("--version", default="1.6", choices=("1.5", "1.6", "small"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None, help="official-layout folder to write/reuse")
    parser.add_argument("--cast-on", default="device,host",
                        help="where weights change dtype: device (copy, then cast there), host (cast, then copy)")
    parser.add_argument("--no-random", action="store_true", help="skip the random-weight rows")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    folder = args.folder or Path(tempfile.gettempdir()) / f"latentsync-load-{args.version}"
    started = time.perf_counter()
    write_folder(folder, args.version)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"official-layout folder {folder}: {size / 2**30:.2f} GiB (written in {time.perf_counter() - started:.1f} s)")
    random_name = {"1.6": "random", "1.5": "random-1.5", "small": "random-small"}[args.version]
    rows = []
    cases = [(f"checkpoint folder, cast on {cast}", str(folder), cast) for cast in args.cast_on.split(",")]
    if not args.no_random:
        cases.append(("random weights", random_name, "device"))
    for label, weights, cast in cases:
        for rep in range(args.reps):
            out = subprocess.run([sys.executable, __file__, "--child", weights, args.device, cast],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"weights": label, "cast_on": cast, "rep": rep, **result})
            print(f"{label:40s} rep {rep}: imports {result['imports_s']:6.2f} s  device init "
                  f"{result['device_init_s']:5.2f} s  load {result['load_s']:6.2f} s",
                  flush=True)
    if args.json:
        from benchmarks.results import write_results

        write_results(args.json, rows, device=args.device, version=args.version, folder_gib=round(size / 2**30, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
