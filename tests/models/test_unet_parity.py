"""The UNet3D reproduces the upstream implementation on the shared parity fixture."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from latentsync.models.unet3d import builtin_unet_config, load_unet_config
from latentsync.models.unet_loading import load_unet_checkpoint
from unet_testlib import rel_err

CASES = ["cfg_batch2_16frames", "single_5frames", "cfg_batch2_16frames_24px"]


@pytest.fixture(scope="module")
def parity_model(unet_parity_dir):
    config = load_unet_config(unet_parity_dir / "small_unet_config.json")
    return load_unet_checkpoint(unet_parity_dir / "small_unet.safetensors", config)


@pytest.fixture(scope="module")
def parity_cases(unet_parity_dir):
    return load_file(str(unet_parity_dir / "cases.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_unet_matches_upstream(parity_model, parity_cases, case):
    with torch.no_grad():
        out = parity_model(
            parity_cases[f"{case}.sample"], parity_cases[f"{case}.timestep"], parity_cases[f"{case}.audio"]
        ).sample
    expected = parity_cases[f"{case}.output"]
    assert out.shape == expected.shape
    assert rel_err(out, expected) < 1e-5


def test_builtin_small_config_is_the_parity_config(unet_parity_dir):
    fixture = json.loads((unet_parity_dir / "small_unet_config.json").read_text())
    assert builtin_unet_config("small") == fixture
