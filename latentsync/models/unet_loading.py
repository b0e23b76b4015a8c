"""Strict loading of LatentSync UNet checkpoints.

Formats: the official `latentsync_unet.pt` (a torch zip file holding
`{"state_dict": {...}, ...}`), a bare state dict saved with torch, or safetensors.
Torch files load with `weights_only=True` (no code runs) and `mmap=True` (tensors
are paged in from the file, copy-on-write, so the user's file is never modified
and no second copy of 5 GB is made before the model takes the weights).

Every key and shape is checked against the model the config describes, built on
the meta device (no memory). Note: LatentSync 1.5 and 1.6 share one architecture
(their configs differ only in the training resolution), so their checkpoints have
identical keys and shapes and cannot be told apart here; a checkpoint of another
architecture (say, without motion modules, or another audio width) fails loudly.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from loguru import logger

from ..errors import CheckpointError
from .unet3d import UNet3DConditionModel

MAX_LISTED_KEYS = 5


def build_meta_unet(config: Mapping[str, Any]) -> UNet3DConditionModel:
    """The model on the meta device: shapes and keys only, no memory."""
    with torch.device("meta"):
        return UNet3DConditionModel.from_config(dict(config))


def expected_state_dict_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every state-dict key (parameters and persistent buffers) with its shape."""
    return {key: tuple(value.shape) for key, value in build_meta_unet(config).state_dict().items()}


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return shown + (f" (+{more} more)" if more > 0 else "")


@dataclass(frozen=True)
class KeyDiff:
    """How a checkpoint's state-dict keys and shapes differ from a model's."""

    expected: dict[str, tuple[int, ...]]
    found: dict[str, tuple[int, ...]]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    @classmethod
    def between(cls, expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]]) -> "KeyDiff":
        expected = {key: tuple(int(d) for d in shape) for key, shape in expected.items()}
        found = {key: tuple(int(d) for d in shape) for key, shape in found.items()}
        return cls(expected, found, sorted(set(expected) - set(found)), sorted(set(found) - set(expected)),
                   sorted(key for key in set(expected) & set(found) if expected[key] != found[key]))

    def problems(self) -> list[str]:
        """What differs, worded for people (empty: an exact match)."""
        problems = []
        if self.missing:
            problems.append(f"{len(self.missing)} missing keys: {_listing(self.missing)}")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected keys: {_listing(self.unexpected)}")
        if self.mismatched:
            details = [f"{key} {list(self.found[key])} (expected {list(self.expected[key])})"
                       for key in self.mismatched]
            problems.append(f"{len(self.mismatched)} keys of the wrong shape: {_listing(details)}")
        return problems


def check_checkpoint_keys(
    state_dict_shapes: Mapping[str, Sequence[int]],
    config: Mapping[str, Any],
    *,
    path: str | Path | None = None,
) -> None:
    """Raise CheckpointError unless the keys and shapes equal those of the configured model exactly."""
    diff = KeyDiff.between(expected_state_dict_shapes(config), state_dict_shapes)
    problems = diff.problems()
    if not problems:
        return
    expected, found = diff.expected, diff.found
    missing, unexpected, mismatched = diff.missing, diff.unexpected, diff.mismatched
    hint = (
        "the checkpoint does not match the UNet config (note: LatentSync 1.5 and 1.6 share one "
        "architecture, so a mismatch means another model, not the other version)"
    )
    conv_in_found, conv_in_expected = found.get("conv_in.weight"), expected.get("conv_in.weight")
    if missing and all(".motion_modules." in key for key in missing):
        hint = "the checkpoint has no motion modules: it is not a LatentSync 1.5/1.6 UNet (1.0?)"
    elif any(key.startswith("module.") for key in unexpected):
        hint = "keys carry a 'module.' prefix (a DistributedDataParallel save); strip it first"
    elif conv_in_found and conv_in_expected and conv_in_found[0] != conv_in_expected[0]:
        hint = (
            f"block widths differ (checkpoint {conv_in_found[0]}, config {conv_in_expected[0]}): "
            "the config describes another model size"
        )
    elif conv_in_found and conv_in_expected and conv_in_found[1] != conv_in_expected[1]:
        hint = f"input channels differ (checkpoint {conv_in_found[1]}, config {conv_in_expected[1]})"
    elif any(".attn2.to_k." in key for key in mismatched):
        hint = "the audio embedding width (cross_attention_dim) differs"
    raise CheckpointError("checkpoint does not fit the UNet: " + "; ".join(problems), path=path, hint=hint)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (CPU, mmap-backed for torch zip files); no code is executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path=str(path))
    if path.stat().st_size == 0:
        raise CheckpointError("checkpoint file is empty", path=str(path))
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # SafetensorError, OSError
            raise CheckpointError(
                f"cannot read safetensors file: {error}", path=str(path), hint="the file is truncated or corrupt"
            ) from error
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Files in torch's legacy (pre-zip) format cannot be memory-mapped.
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file can fail anywhere in the unpickler
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if zipfile.is_zipfile(path) or "zip archive" in message or "central directory" in message:
            raise CheckpointError(
                f"cannot read checkpoint: {message}",
                path=str(path),
                hint="the file is truncated or corrupt; download it again",
            ) from error
        refused = isinstance(error, pickle.UnpicklingError) and "weights_only" in str(error).lower()
        raise CheckpointError(
            f"not a loadable weights file: {message}",
            path=str(path),
            hint="the file holds objects other than tensors; it is refused because loading it would run code"
            if refused
            else "expected latentsync_unet.pt (a torch file of tensors) or a .safetensors file; "
            "the file may also be truncated or corrupt",
        ) from error
    if isinstance(data, Mapping) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError("file holds no state dict", path=str(path), hint="expected {'state_dict': {...}}")
    not_tensors = [str(key) for key, value in data.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"state dict holds non-tensor entries: {_listing(not_tensors)}",
            path=str(path),
            hint="expected latentsync_unet.pt: a dict with a 'state_dict' of tensors",
        )
    return dict(data)


def load_unet_checkpoint(
    path: str | Path,
    config: Mapping[str, Any],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> UNet3DConditionModel:
    """Build the UNet from `config` and load `path` strictly; returns it in eval mode on `device`/`dtype`.

    The model is built on the meta device and takes the checkpoint's tensors directly
    (`assign=True`), each moved to `device`/`dtype` on its own: peak memory is one copy of
    the weights on the target device (plus the memory-mapped file, paged in on demand).
    """
    state_dict = read_state_dict(path)
    check_checkpoint_keys({key: value.shape for key, value in state_dict.items()}, config, path=path)
    model = build_meta_unet(config)
    # Tensor by tensor straight to the target device and dtype: no second full copy on the host.
    converted = {
        key: value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
        for key, value in state_dict.items()
    }
    del state_dict
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as error:  # defensive: the key check above should have caught it
        raise CheckpointError(f"cannot load the state dict: {error}", path=str(path)) from error
    model = model.to(device=device, dtype=dtype).eval()
    logger.info("loaded UNet checkpoint {} ({} tensors) on {} as {}", Path(path).name, len(converted), device, dtype)
    return model
