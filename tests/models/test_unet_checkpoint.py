"""Strict checkpoint loading: official layout, safetensors, and every way a file can be wrong."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from latentsync.errors import CheckpointError, InvalidInputError
from latentsync.models.unet3d import builtin_unet_config, load_unet_config
from latentsync.models.unet_loading import (
    build_meta_unet,
    check_checkpoint_keys,
    expected_state_dict_shapes,
    load_unet_checkpoint,
    read_state_dict,
)
from latentsync.paths import reference_dir
from unet_testlib import make_inputs, make_unet

FULL_PARAM_COUNT = 1_267_099_844


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_model():
    return make_unet(seed=3)


@pytest.fixture
def official_ckpt(tmp_path, small_model):
    """A checkpoint in the official layout: {'state_dict': ..., 'global_step': ...}."""
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": small_model.state_dict(), "global_step": 1234}, path)
    return path


# ------------------------------------------------------------------ full-size architecture, meta only


@pytest.fixture(scope="module")
def manifest():
    ref = reference_dir()
    path = ref / "unet_parity" / "stage2_512_manifest.json" if ref is not None else None
    if path is None or not path.is_file():
        pytest.skip("stage2_512_manifest.json not available")
    return json.loads(path.read_text())


def test_full_size_meta_model_equals_manifest(manifest):
    config = builtin_unet_config("1.6")
    model = build_meta_unet(config)
    assert all(p.is_meta for p in model.parameters())
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes == {key: tuple(shape) for key, shape in manifest["state_dict_shapes"].items()}
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAM_COUNT == manifest["num_params"]
    check_checkpoint_keys(manifest["state_dict_shapes"], config)  # does not raise


def test_builtin_full_config_equals_upstream_yaml(manifest):
    ref = reference_dir()
    from_yaml = load_unet_config(ref / "unet_stage2_512.yaml")
    assert isinstance(from_yaml["norm_eps"], float) and from_yaml["norm_eps"] == 1e-5
    assert from_yaml == builtin_unet_config("1.6") == manifest["config"]
    assert load_unet_config(ref / "unet_stage2.yaml") == builtin_unet_config("1.5")


def test_versions_1_5_and_1_6_share_every_shape():
    # Why the loader cannot tell a 1.5 checkpoint from a 1.6 one: the tensors are the same.
    assert expected_state_dict_shapes(builtin_unet_config("1.5")) == expected_state_dict_shapes(
        builtin_unet_config("1.6")
    )


def test_manifest_against_small_config_names_offending_keys(manifest):
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_keys(manifest["state_dict_shapes"], builtin_unet_config("small"), path="x/unet.pt")
    text = str(info.value)
    assert "x/unet.pt" in text and "conv_in.weight" in text and "block widths differ" in text


# ------------------------------------------------------------------ round trips


def test_official_layout_loads_strictly_and_reproduces_outputs(official_ckpt, small_model):
    before = _digest(official_ckpt)
    loaded = load_unet_checkpoint(official_ckpt, builtin_unet_config("small"))
    sample, t, audio = make_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, audio).sample, small_model(sample, t, audio).sample)
    assert not loaded.training
    assert _digest(official_ckpt) == before  # the user's file is untouched


def test_load_in_half_precision(official_ckpt):
    loaded = load_unet_checkpoint(official_ckpt, builtin_unet_config("small"), dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_safetensors_and_bare_state_dict(tmp_path, small_model):
    st = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in small_model.state_dict().items()}, str(st))
    bare = tmp_path / "bare.pt"
    torch.save(small_model.state_dict(), bare)
    for path in (st, bare):
        loaded = load_unet_checkpoint(path, builtin_unet_config("small"))
        assert torch.equal(loaded.conv_in.weight, small_model.conv_in.weight)


# ------------------------------------------------------------------ bad files


def test_truncated_checkpoint(official_ckpt, tmp_path):
    data = official_ckpt.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_unet_checkpoint(truncated, builtin_unet_config("small"))
    assert "truncated.pt" in str(info.value) and "truncated or corrupt" in str(info.value)


def test_truncated_safetensors(tmp_path, small_model):
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in small_model.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="unet.safetensors"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "empty"), (b"this is a text file, not weights\n", "not a loadable weights file")],
)
def test_not_a_checkpoint(tmp_path, content, expected):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_unet_checkpoint(path, builtin_unet_config("small"))
    assert info.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_unet_checkpoint(tmp_path / "absent.pt", builtin_unet_config("small"))


class _Payload:
    """Unpickling this would create a file: proves that no code runs when loading."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_in_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_unet_checkpoint(path, builtin_unet_config("small"))
    assert not marker.exists()


def test_non_tensor_state_dict(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {"conv_in.weight": [1, 2, 3]}}, path)
    with pytest.raises(CheckpointError, match="non-tensor"):
        read_state_dict(path)


def _save_modified(tmp_path, small_model, edit) -> os.PathLike:
    state = dict(small_model.state_dict())
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save({"state_dict": state}, path)
    return path


def test_missing_key_is_named(tmp_path, small_model):
    path = _save_modified(tmp_path, small_model, lambda s: s.pop("mid_block.resnets.1.conv2.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing keys: mid_block\.resnets\.1\.conv2\.bias"):
        load_unet_checkpoint(path, builtin_unet_config("small"))


def test_unexpected_key_is_named(tmp_path, small_model):
    path = _save_modified(tmp_path, small_model, lambda s: s.__setitem__("extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        load_unet_checkpoint(path, builtin_unet_config("small"))


def test_shape_mismatch_is_named(tmp_path, small_model):
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    path = _save_modified(tmp_path, small_model, lambda s: s.__setitem__(key, torch.zeros(32, 768)))
    with pytest.raises(CheckpointError) as info:
        load_unet_checkpoint(path, builtin_unet_config("small"))
    assert key in str(info.value) and "[32, 768]" in str(info.value)
    assert "audio embedding width" in str(info.value)


def test_checkpoint_without_motion_modules_gets_a_hint(tmp_path, small_model):
    path = _save_modified(
        tmp_path,
        small_model,
        lambda s: [s.pop(k) for k in [k for k in s if ".motion_modules." in k]],
    )
    with pytest.raises(CheckpointError, match="no motion modules"):
        load_unet_checkpoint(path, builtin_unet_config("small"))


# ------------------------------------------------------------------ config files


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "unet.yaml"
    bad.write_text("model:\n  in_channels: 13\n")
    with pytest.raises(InvalidInputError, match="block_out_channels") as info:
        load_unet_config(bad)
    assert info.value.path == str(bad)
    broken = tmp_path / "unet.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot parse"):
        load_unet_config(broken)
    eps = tmp_path / "eps.json"
    eps.write_text(json.dumps({**builtin_unet_config("small"), "norm_eps": "tiny"}))
    with pytest.raises(InvalidInputError, match="norm_eps"):
        load_unet_config(eps)
    with pytest.raises(InvalidInputError):
        builtin_unet_config("2.0")
