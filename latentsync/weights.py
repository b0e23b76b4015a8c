"""Model weights: the official folder layout, explicit random weights, and fetching.

A plan's `weights:` is one of
- a folder in the official layout: `latentsync_unet.pt`, `whisper/tiny.pt`, `vae/`
  (diffusers AutoencoderKL: `config.json` + weights);
- `random` (the full 1.6 architecture at 512 px), `random-1.5` (256 px) or
  `random-small` (a tiny config for CPUs and tests). Random weights are explicit
  and logged loudly: the output is NOT lip-synced.

Loaded models are cached per (weights, device, dtype) so a watcher or a batch
of jobs loads them once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loguru import logger

from .errors import CheckpointError, InvalidInputError

RANDOM_WEIGHTS = {
    # name: (UNet config, VAE config, face resolution, model version)
    "random": ("1.6", "sd", 512, "1.6"),
    "random-1.6": ("1.6", "sd", 512, "1.6"),
    "random-1.5": ("1.5", "sd", 256, "1.5"),
    "random-small": ("small", "small", 128, "small"),
}

UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = Path("whisper") / "tiny.pt"
VAE_DIR = "vae"

# Official hub repositories, used only by `fetch_weights` (never by tests).
HUB_REPOS = {
    "1.6": "ByteDance/LatentSync-1.6",
    "1.5": "ByteDance/LatentSync-1.5",
}
HUB_VAE_REPO = "stabilityai/sd-vae-ft-mse"


@dataclass
class LipSyncModels:
    unet: object
    vae: object
    audio_encoder: object
    resolution: int
    version: str
    random: bool
    device: str
    dtype: object
    source: str


def is_random(weights: str) -> bool:
    return str(weights) in RANDOM_WEIGHTS


def weights_version(weights: str) -> tuple[str, int]:
    """(model version, face resolution) a weights spec implies, without loading anything."""
    if is_random(weights):
        _, _, res, version = RANDOM_WEIGHTS[str(weights)]
        return version, res
    folder = Path(weights)
    marker = folder / "version.txt"
    if marker.is_file():
        version = marker.read_text(encoding="utf-8").strip()
    else:
        # The 1.5 and 1.6 checkpoints share every key and shape; only the crop size
        # differs. Folder names from fetch-weights say which; otherwise assume 1.6.
        version = "1.5" if "1.5" in folder.name else "1.6"
    return version, 256 if version == "1.5" else 512


def check_weights_folder(folder: Path) -> None:
    """Fail fast, before any heavy work, when the official layout is incomplete."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            "weights folder not found",
            path=folder,
            hint="use `weights: random` (not lip-synced) or run `latentsync-run fetch-weights DIR`",
        )
    missing = [str(p) for p in (UNET_FILE, WHISPER_FILE, Path(VAE_DIR) / "config.json") if not (folder / p).exists()]
    if missing:
        raise CheckpointError(
            f"weights folder lacks {', '.join(missing)}",
            path=folder,
            hint="the official layout is latentsync_unet.pt, whisper/tiny.pt, vae/ (run `latentsync-run fetch-weights DIR`)",
        )


_cache: dict[tuple, LipSyncModels] = {}
_cache_lock = threading.Lock()


def load_models(weights: str, *, device: str = "cpu", dtype=None, seed: int = 0) -> LipSyncModels:
    """Load (or build) UNet, VAE and Whisper encoder on `device` in `dtype`; cached."""
    import torch

    dtype = dtype or torch.float32
    key = (str(weights), str(device), str(dtype))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        models = _load(str(weights), device=device, dtype=dtype, seed=seed)
        _cache.clear()  # one model set at a time: VRAM is precious
        _cache[key] = models
        return models


def clear_model_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _load(weights: str, *, device, dtype, seed) -> LipSyncModels:
    import torch

    from .models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized
    from .models.whisper_encoder import load_whisper_encoder, random_whisper_encoder
    from .pipeline.vae import build_random_vae, load_vae

    if is_random(weights):
        unet_name, vae_name, res, version = RANDOM_WEIGHTS[weights]
        logger.warning(
            "weights: {} -> RANDOM weights ({} architecture). The output is NOT lip-synced; "
            "use a folder of official weights for real results.",
            weights,
            unet_name,
        )
        torch.manual_seed(seed)
        unet = UNet3DConditionModel.from_config(builtin_unet_config(unet_name))
        randomize_zero_initialized(unet, seed=seed)
        vae = build_random_vae(vae_name, seed=seed)
        audio_encoder = random_whisper_encoder(seed=seed)
        random = True
    else:
        from .models.unet_loading import load_unet_checkpoint

        folder = Path(weights)
        check_weights_folder(folder)
        version, res = weights_version(weights)
        config = _folder_unet_config(folder) or builtin_unet_config("1.5" if version == "1.5" else "1.6")
        unet = load_unet_checkpoint(folder / UNET_FILE, config, device="cpu", dtype=torch.float32)
        vae = load_vae(folder / VAE_DIR)
        audio_encoder = load_whisper_encoder(folder / WHISPER_FILE)
        random = False
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    # nn.Module.to: diffusers' ModelMixin.to logs a spurious "keep in float32: []" warning.
    vae = torch.nn.Module.to(vae, device=device, dtype=dtype).eval().requires_grad_(False)
    # Whisper runs once per clip; fp32 keeps its features faithful at negligible cost.
    audio_encoder = audio_encoder.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    return LipSyncModels(
        unet=unet,
        vae=vae,
        audio_encoder=audio_encoder,
        resolution=res,
        version=version,
        random=random,
        device=str(device),
        dtype=dtype,
        source=weights,
    )


UNET_CONFIG_FILES = ("unet_config.json", "config.yaml", "unet_config.yaml")


def _folder_unet_config(folder: Path):
    """A UNet config kept beside the checkpoint (upstream yaml or JSON), if any."""
    from .models.unet3d import load_unet_config

    for name in UNET_CONFIG_FILES:
        if (folder / name).is_file():
            logger.info("UNet config from {}", folder / name)
            return load_unet_config(folder / name)
    return None


def fetch_weights(dest: Path, *, version: str = "1.6", snapshot_download=None) -> Path:
    """Download the official layout into `dest` (needs internet and huggingface_hub).

    `snapshot_download` is injectable so tests can point it at a local fake
    repository; nothing in the test suite reaches the network.
    """
    if version not in HUB_REPOS:
        raise InvalidInputError(f"unknown LatentSync version {version!r}", hint=f"choose one of {sorted(HUB_REPOS)}")
    if snapshot_download is None:
        try:
            from huggingface_hub import snapshot_download
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise InvalidInputError(
                "fetch-weights needs huggingface_hub", hint='pip install "latentsync-runner[fetch]"'
            ) from exc
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    logger.info("fetching LatentSync {} into {}", version, dest)
    snapshot_download(
        repo_id=HUB_REPOS[version], local_dir=str(dest), allow_patterns=[UNET_FILE, str(WHISPER_FILE)]
    )
    snapshot_download(
        repo_id=HUB_VAE_REPO,
        local_dir=str(dest / VAE_DIR),
        allow_patterns=["config.json", "diffusion_pytorch_model.safetensors"],
    )
    (dest / "version.txt").write_text(version + "\n", encoding="utf-8")
    check_weights_folder(dest)
    logger.info("weights ready in {}", dest)
    return dest
