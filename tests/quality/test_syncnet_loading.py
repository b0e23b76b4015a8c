"""Loading StableSyncNet checkpoints: upstream's format, strict keys, clear errors (no fixtures needed)."""
from __future__ import annotations

import pickle

import pytest
import torch

from latentsync.errors import CheckpointError
from latentsync.models.stable_syncnet import StableSyncNet, load_syncnet_checkpoint, seeded_initialisation


@pytest.fixture(scope="module")
def small_model() -> StableSyncNet:
    return seeded_initialisation(StableSyncNet.from_config("small"), 3).eval()


def test_loads_upstream_dict_format(tmp_path, small_model):
    path = tmp_path / "stable_syncnet.pt"
    torch.save({"state_dict": small_model.state_dict(), "global_step": 10}, path)
    loaded = load_syncnet_checkpoint(path, "small")
    for key, value in small_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not loaded.training


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "stable_syncnet.pt"
    with pytest.raises(CheckpointError, match="stable_syncnet.pt") as error:
        load_syncnet_checkpoint(path, "small")
    assert "not found" in str(error.value)


def test_wrong_config_is_refused(tmp_path, small_model):
    path = tmp_path / "stable_syncnet.pt"
    torch.save({"state_dict": small_model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit the SyncNet config"):
        load_syncnet_checkpoint(path, "syncnet_16_pixel_attn")


def test_missing_key_is_refused(tmp_path, small_model):
    state = dict(small_model.state_dict())
    state.pop("visual_encoder.norm_out.bias")
    path = tmp_path / "partial.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="1 missing keys: visual_encoder.norm_out.bias"):
        load_syncnet_checkpoint(path, "small")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": _Payload()}}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError):
        load_syncnet_checkpoint(path, "small")


@pytest.mark.parametrize("name", ["syncnet_16_pixel_attn", "syncnet_16_pixel"])
def test_auto_config_follows_the_attention_keys(name):
    from latentsync.models.stable_syncnet import config_for_keys

    assert config_for_keys(StableSyncNet.from_config(name, meta=True).state_dict()) == name


def test_auto_config_rejects_a_small_checkpoint_clearly(tmp_path, small_model):
    path = tmp_path / "stable_syncnet.pt"
    torch.save({"state_dict": small_model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_syncnet_checkpoint(path, "auto")
