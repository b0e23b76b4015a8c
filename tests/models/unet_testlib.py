"""Helpers for the UNet3D tests (imported by name: tests/models is on sys.path)."""
from __future__ import annotations

import torch

from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized


def make_unet(seed: int = 0, **overrides) -> UNet3DConditionModel:
    torch.manual_seed(seed)
    config = {**builtin_unet_config("small"), **overrides}
    model = UNet3DConditionModel.from_config(config).eval()
    randomize_zero_initialized(model, seed=seed + 1, std=0.05)
    return model


def make_inputs(batch: int = 1, frames: int = 4, size: int = 8, seed: int = 0, timestep: int = 500):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, size, size, generator=generator)
    audio = torch.randn(batch * frames, 50, 384, generator=generator)
    return sample, torch.tensor([timestep]), audio


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()
