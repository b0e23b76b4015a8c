"""Fixtures for the UNet3D tests: the small built-in config (the parity fixture's), random
weights with the zero-initialised layers re-randomised, and the parity fixture folder."""
from __future__ import annotations

import pytest
import torch

from latentsync.paths import reference_dir
from unet_testlib import make_unet


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """These tensors are tiny: a second OpenMP thread gains nothing and, on a busy
    2-core runner, oversubscription made this folder 10x slower. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def unet():
    return make_unet()


@pytest.fixture(scope="session")
def unet_parity_dir():
    ref = reference_dir()
    folder = ref / "unet_parity" if ref is not None else None
    if folder is None or not (folder / "cases.safetensors").is_file():
        pytest.skip("shared/reference/unet_parity not available")
    return folder
