"""Stable Diffusion's VAE (diffusers AutoencoderKL) as the pipeline uses it.

Encoding uses the posterior's mode (its mean) rather than upstream's
`latent_dist.sample()`: the draw adds noise of the posterior's std (tiny for
sd-vae-ft-mse) and makes runs non-reproducible; the mode is the deterministic
centre of the same distribution. `sample_posterior=True` restores upstream's draw.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL

from ..errors import CheckpointError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCALING_FACTOR = 0.18215  # LatentSync's VAE latent scale; shift factor is 0


@dataclass
class VaeOptions:
    """How to run the VAE: the run plan's vae_* settings."""

    slicing: bool = False
    tiling: bool = False
    batch: int = 16  # images per encode/decode call
    sample_posterior: bool = False
    decode_region: str = "full"  # "full" | "mask": decode only the latent rows the mask repaints

    @classmethod
    def from_settings(cls, settings) -> "VaeOptions":
        """From a RunSettings (typed and complete: no defaults here)."""
        return cls(slicing=settings.vae_slicing, tiling=settings.vae_tiling, batch=settings.vae_batch,
                   decode_region=settings.vae_decode_region)


def vae_config(name: str = "sd") -> dict:
    """Built-in architecture configs: "sd" (sd-vae-ft-mse layout) or "small" (tests)."""
    with open(CONFIG_DIR / f"vae_{name}.json", encoding="utf-8") as fh:
        config = json.load(fh)
    config.pop("_comment", None)
    return config


def build_random_vae(name: str = "sd", *, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(vae_config(name))
    return vae.eval().requires_grad_(False)


def load_vae(folder: Path) -> AutoencoderKL:
    """Load a diffusers-layout VAE folder (config.json + weights), offline."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            "not a VAE folder: config.json is missing",
            path=folder,
            hint="the weights folder needs vae/config.json and vae/diffusion_pytorch_model.safetensors "
            "(run `latentsync-run fetch-weights DIR`)",
        )
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # diffusers raises several types for bad folders
        raise CheckpointError(f"cannot load the VAE: {exc}", path=folder) from exc
    return vae.eval().requires_grad_(False)


def apply_vae_options(vae: AutoencoderKL, options: VaeOptions) -> None:
    if options.slicing:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    if options.tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def _batched(images: torch.Tensor, batch: int):
    batch = max(1, int(batch))
    for start in range(0, images.shape[0], batch):
        yield images[start : start + batch]


@torch.no_grad()
def encode_images(
    vae: AutoencoderKL,
    images: torch.Tensor,
    options: VaeOptions,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> scaled latents (N, 4, H/8, W/8)."""
    outputs = []
    for part in _batched(images, options.batch):
        dist = vae.encode(part).latent_dist
        latents = dist.sample(generator=generator) if options.sample_posterior else dist.mode()
        outputs.append(latents * SCALING_FACTOR)
    return torch.cat(outputs)


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, options: VaeOptions) -> torch.Tensor:
    """Scaled latents (N, 4, h, w) -> images (N, 3, 8h, 8w) in about [-1, 1]."""
    outputs = []
    for part in _batched(latents, options.batch):
        outputs.append(vae.decode(part / SCALING_FACTOR).sample)
    return torch.cat(outputs)


def vae_scale_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)
