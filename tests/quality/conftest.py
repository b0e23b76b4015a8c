"""Shared fixtures for the quality tests: the SyncNet parity reference (skips when absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentsync.paths import reference_dir


@pytest.fixture(scope="session")
def syncnet_reference() -> Path:
    """`../shared/reference/syncnet_parity`, or skip when the reference data is absent."""
    root = reference_dir()
    if root is None or not (root / "syncnet_parity").is_dir():
        pytest.skip("reference data (../shared/reference/syncnet_parity) not present")
    return root / "syncnet_parity"


@pytest.fixture(scope="session")
def syncnet_cases(syncnet_reference: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(syncnet_reference / "cases.safetensors"))


@pytest.fixture(scope="session")
def full_manifest(syncnet_reference: Path) -> dict:
    return json.loads((syncnet_reference / "full_manifest.json").read_text())


@pytest.fixture(scope="session")
def small_reference_model(syncnet_reference: Path):
    """StableSyncNet built from `small_config.json` with the fixture's weights, strictly loaded."""
    from safetensors.torch import load_file

    from latentsync.models.stable_syncnet import StableSyncNet

    config = json.loads((syncnet_reference / "small_config.json").read_text())["model"]
    model = StableSyncNet.from_config(config)
    model.load_state_dict(load_file(str(syncnet_reference / "small_syncnet.safetensors")), strict=True)
    return model.eval()
