"""The original SyncNet (`syncnet_v2.model`): the network behind LSE-C / LSE-D.

Written from the architecture facts of upstream's `eval/syncnet/syncnet.py` (bytedance/LatentSync,
itself from joonson/syncnet_python), so that its checkpoint loads under the same key names:

- four `nn.Sequential` attributes, created in this order: `netcnnaud` (audio CNN, 2-D),
  `netfcaud` (audio head), `netfclip` (lip head), `netcnnlip` (lip CNN, 3-D). The layer lists
  are plain data below (`SYNCNET_V2`); a Sequential's indices count every layer, ReLUs and
  pools included, which is what makes the key names (`netcnnaud.1.running_var`, ...).
- BatchNorm everywhere after a conv or the first linear layer (eps 1e-5), run in eval mode
  (running statistics). Heads: Linear(512, 512), BatchNorm1d, ReLU, Linear(512, 1024).
- Inputs: lips (B, 3, 5, 224, 224), five consecutive face crops, channels in **BGR** order
  (upstream reads frames with OpenCV), raw pixel values 0..255 as floats (no normalisation);
  audio (B, 1, 13, 20): 13 MFCCs (`latentsync.quality.mfcc`, python_speech_features' recipe)
  by 20 columns of 10 ms = the 0.2 s under five video frames at 25 fps.
- Outputs: (B, 1024) raw embeddings, **not** normalised; LSE uses their Euclidean distances.

`SyncNetV2.from_config()` builds it (`meta=True` on the meta device); `load_syncnet_v2` loads a
checkpoint strictly (torch `weights_only=True`, keys and shapes checked with `KeyDiff`).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from loguru import logger
from torch import Tensor, nn

SYNCNET_V2_FILE = "syncnet_v2.model"
EMBEDDING_SIZE = 1024
FRAMES_PER_WINDOW = 5
CROP_SIZE = 224
MFCC_COLUMNS_PER_WINDOW = 20
BATCH_NORM_EPS = 1e-5
# Optional in a checkpoint: BatchNorm's counter is not used in eval mode, and checkpoints saved
# by torch before 0.4.1 (as joonson's syncnet_v2.model was first published) have none.
OPTIONAL_SUFFIX = ".num_batches_tracked"
# Upstream's SyncNetEval holds the network as `__S__`; a state dict of the wrapper has this prefix.
WRAPPER_PREFIX = "__S__."


def _conv(cin: int, cout: int, kernel, stride=1, padding=0) -> dict[str, Any]:
    return {"kind": "conv", "in": cin, "out": cout, "kernel": kernel, "stride": stride, "padding": padding}


def _norm(channels: int) -> dict[str, Any]:
    return {"kind": "batchnorm", "channels": channels}


def _pool(kernel, stride, padding=0) -> dict[str, Any]:
    return {"kind": "maxpool", "kernel": kernel, "stride": stride, "padding": padding}


RELU = {"kind": "relu"}


def _block(cin: int, cout: int, kernel, stride=1, padding=0) -> list[dict[str, Any]]:
    """conv, batchnorm, relu: three Sequential indices."""
    return [_conv(cin, cout, kernel, stride, padding), _norm(cout), RELU]


def _head(width: int, out: int) -> list[dict[str, Any]]:
    return [{"kind": "linear", "in": width, "out": width}, _norm(width), RELU, {"kind": "linear", "in": width, "out": out}]


# Upstream's S(num_layers_in_fc_layers=1024), layer by layer. `dims` says 2-D or 3-D layers.
SYNCNET_V2: dict[str, Any] = {
    "netcnnaud": {
        "dims": 2,
        "layers": [
            *_block(1, 64, [3, 3], [1, 1], [1, 1]),
            _pool([1, 1], [1, 1]),
            *_block(64, 192, [3, 3], [1, 1], [1, 1]),
            _pool([3, 3], [1, 2]),
            *_block(192, 384, [3, 3], 1, [1, 1]),
            *_block(384, 256, [3, 3], 1, [1, 1]),
            *_block(256, 256, [3, 3], 1, [1, 1]),
            _pool([3, 3], [2, 2]),
            *_block(256, 512, [5, 4], 1, [0, 0]),
        ],
    },
    "netfcaud": {"dims": 1, "layers": _head(512, EMBEDDING_SIZE)},
    "netfclip": {"dims": 1, "layers": _head(512, EMBEDDING_SIZE)},
    "netcnnlip": {
        "dims": 3,
        "layers": [
            *_block(3, 96, [5, 7, 7], [1, 2, 2], 0),
            _pool([1, 3, 3], [1, 2, 2]),
            *_block(96, 256, [1, 5, 5], [1, 2, 2], [0, 1, 1]),
            _pool([1, 3, 3], [1, 2, 2], [0, 1, 1]),
            *_block(256, 256, [1, 3, 3], 1, [0, 1, 1]),
            *_block(256, 256, [1, 3, 3], 1, [0, 1, 1]),
            *_block(256, 256, [1, 3, 3], 1, [0, 1, 1]),
            _pool([1, 3, 3], [1, 2, 2]),
            *_block(256, 512, [1, 6, 6], 1, 0),
        ],
    },
}
TOWERS = ("netcnnaud", "netfcaud", "netfclip", "netcnnlip")  # creation order = state-dict order


def _tuple(value, dims: int):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * dims


def _layer(spec: Mapping[str, Any], dims: int) -> nn.Module:
    kind = spec["kind"]
    if kind == "relu":
        return nn.ReLU()
    if kind == "linear":
        return nn.Linear(spec["in"], spec["out"])
    if kind == "batchnorm":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](spec["channels"], eps=BATCH_NORM_EPS)
    if kind == "conv":
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        return conv(spec["in"], spec["out"], kernel_size=_tuple(spec["kernel"], dims),
                    stride=_tuple(spec["stride"], dims), padding=_tuple(spec["padding"], dims))
    if kind == "maxpool":
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        return pool(kernel_size=_tuple(spec["kernel"], dims), stride=_tuple(spec["stride"], dims),
                    padding=_tuple(spec["padding"], dims))
    raise ValueError(f"unknown layer kind {kind!r}")


class SyncNetV2(nn.Module):
    """The original SyncNet: `embed_lips` (B, 3, 5, 224, 224) BGR 0..255 and `embed_audio`
    (B, 1, 13, 20) MFCC windows give raw (B, 1024) embeddings."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        super().__init__()
        self.config = copy.deepcopy(dict(config or SYNCNET_V2))
        for name in TOWERS:
            tower = self.config[name]
            self.add_module(name, nn.Sequential(*[_layer(spec, tower["dims"]) for spec in tower["layers"]]))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, *, meta: bool = False) -> "SyncNetV2":
        if meta:
            with torch.device("meta"):
                return cls(config)
        return cls(config)

    def embed_lips(self, lips: Tensor) -> Tensor:
        features = self.netcnnlip(lips)
        return self.netfclip(features.reshape(features.shape[0], -1))

    def embed_audio(self, mfcc: Tensor) -> Tensor:
        features = self.netcnnaud(mfcc)
        return self.netfcaud(features.reshape(features.shape[0], -1))

    def forward(self, lips: Tensor, mfcc: Tensor) -> tuple[Tensor, Tensor]:
        return self.embed_lips(lips), self.embed_audio(mfcc)


def expected_shapes(config: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Every state-dict key (parameters and BatchNorm buffers), in order, with its shape."""
    return {key: tuple(value.shape) for key, value in SyncNetV2.from_config(config, meta=True).state_dict().items()}


def seeded_state_dict(seed: int, config: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """Random weights drawn from `seed` (tests and `random` weights; the parity fixture's rule).

    numpy `default_rng(seed)`, one draw per state-dict key in order, float64 then float32:
    conv/linear weights normal(0, sqrt(2 / fan_in)); biases uniform(-0.1, 0.1); BatchNorm
    weights uniform(0.5, 1.5), running means normal(0, 0.1), running variances
    uniform(0.5, 1.5); `num_batches_tracked` 0 (no draw). Then the audio head `netfcaud` takes
    the lip head's (`netfclip`) values, so that the two embeddings are comparable.
    """
    rng = np.random.default_rng(int(seed))
    out: dict[str, Tensor] = {}
    for key, shape in expected_shapes(config).items():
        if key.endswith(OPTIONAL_SUFFIX):
            out[key] = torch.zeros((), dtype=torch.long)
            continue
        if key.endswith("running_mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bias"):
            value = rng.uniform(-0.1, 0.1, shape)
        elif len(shape) == 1:  # a BatchNorm weight
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[1:])), shape)
        out[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    for key in list(out):
        if key.startswith("netfclip."):
            out["netfcaud." + key[len("netfclip."):]] = out[key].clone()
    return out


def seeded_syncnet_v2(seed: int = 0) -> SyncNetV2:
    model = SyncNetV2.from_config()
    model.load_state_dict(seeded_state_dict(seed), strict=True)
    return model.eval()


def normalise_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip the `__S__.` prefix of a state dict saved from upstream's SyncNetEval wrapper."""
    if state_dict and all(key.startswith(WRAPPER_PREFIX) for key in state_dict):
        return {key[len(WRAPPER_PREFIX):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def check_syncnet_v2_keys(state_dict_shapes: Mapping[str, Sequence[int]], *, path: str | None = None) -> None:
    """Raise CheckpointError unless the keys and shapes are the original SyncNet's (BatchNorm's
    `num_batches_tracked` may be absent)."""
    from ..errors import CheckpointError
    from .unet_loading import KeyDiff

    expected = expected_shapes()
    present = {key: shape for key, shape in expected.items()
               if not key.endswith(OPTIONAL_SUFFIX) or key in state_dict_shapes}
    diff = KeyDiff.between(present, state_dict_shapes)
    problems = diff.problems()
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit the original SyncNet ({SYNCNET_V2_FILE}): " + "; ".join(problems),
            path=path,
            hint=f"expected upstream's auxiliary/{SYNCNET_V2_FILE} (SyncNet 'S' with 1024-wide embeddings); "
            "stable_syncnet.pt is another network (latentsync-eval reads it separately)",
        )


def load_syncnet_v2(path: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> SyncNetV2:
    """Load `syncnet_v2.model` strictly: torch `weights_only=True` (nothing in it runs), a bare
    state dict or `{"state_dict": ...}`, keys with or without upstream's `__S__.` prefix; every
    key and shape is checked. A missing, empty, unsafe or mismatched file raises CheckpointError
    naming it. Returns the model in eval mode."""
    from ..errors import CheckpointError
    from .unet_loading import read_state_dict

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{SYNCNET_V2_FILE} not found", path=str(path),
                              hint="run `latentsync-run fetch-weights DIR` (it fetches auxiliary/syncnet_v2.model)")
    state_dict = normalise_keys(read_state_dict(path))
    check_syncnet_v2_keys({key: value.shape for key, value in state_dict.items()}, path=str(path))
    model = SyncNetV2.from_config()
    missing = [key for key in model.state_dict() if key not in state_dict]  # only num_batches_tracked
    converted = {key: value.to(dtype=dtype) if value.is_floating_point() else value
                 for key, value in state_dict.items()}
    model.load_state_dict(converted, strict=not missing)
    logger.info("loaded {} ({} tensors) on {} as {}", path.name, len(converted), device, dtype)
    return model.to(device=device, dtype=dtype).eval()
