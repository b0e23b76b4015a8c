"""StableSyncNet: LatentSync's lip-sync discriminator (audio and lower-face embeddings).

Written from the architecture facts of upstream's `latentsync/models/stable_syncnet.py`
(bytedance/LatentSync), so that upstream checkpoints (`stable_syncnet.pt`: a dict whose
`"state_dict"` holds the tensors) load strictly under the same key names:

- Each encoder: `conv_in` (3x3, padding 1), then `down_blocks`, one ModuleList holding each
  `ResnetBlock2D` followed by an `AttentionBlock2D` where `attn_blocks[i]` is 1 (so indices
  count both), then `norm_out` (GroupNorm 32, eps 1e-6) and a ReLU; the 1x1 map is reshaped to
  (B, C). Resnet block i maps `block_out_channels[i - 1]` (block 0: `block_out_channels[0]`)
  to `block_out_channels[i]`.
- `ResnetBlock2D`: norm1, SiLU, conv1 3x3, norm2, SiLU, dropout, conv2 3x3, plus the input
  (through a 1x1 `conv_shortcut` when the width changes); then the downsample: a pad and a
  3x3 `downsample_conv` with the factor as stride and no padding. Pads (left, right, top,
  bottom): (0,1,0,1) for an integer factor and for [2,3]; (0,1,1,1) for [1,2]; (1,1,0,1) for
  [2,1]. A factor of 1 has no conv.
- `AttentionBlock2D`: norm1 (GroupNorm), 1x1 `conv_in`, tokens; `attn(norm2(h)) + h`;
  `ff(norm3(h)) + h` (norm2/norm3 LayerNorm eps 1e-5); back to a map; 1x1 `conv_out`; plus
  the block's input. Attention: 8 heads, q/k/v/out with bias. `ff`: GEGLU (`net.0.proj`,
  c -> 8c, value * gelu(gate)) then `net.2` (4c -> c).
- `forward(image_sequences, audio_sequences)` returns the L2-normalised embeddings
  (visual, audio); their cosine similarity (in [0, 1]: both are non-negative after the ReLU)
  is the sync probability.

Inputs: `image_sequences` (B, 3*16, res/2, res), 16 aligned RGB face crops in [-1, 1] stacked
as channel 3*f + c, lower half only; `audio_sequences` (B, 1, 80, 52) mel windows
(`latentsync.quality.mel`). The config is plain data (the `model` section of upstream's
`configs/syncnet/*.yaml`); `from_config` builds it, `meta=True` on the meta device.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUPS = 32
GROUP_NORM_EPS = 1e-6
LAYER_NORM_EPS = 1e-5
ATTENTION_HEADS = 8

# The `model` sections of upstream's configs/syncnet/syncnet_16_pixel_attn.yaml (LatentSync 1.6,
# stable_syncnet.pt) and syncnet_16_pixel.yaml (no attention blocks).
SYNCNET_16_PIXEL_ATTN: dict[str, Any] = {
    "audio_encoder": {
        "in_channels": 1,
        "block_out_channels": [32, 64, 128, 256, 512, 1024, 2048],
        "downsample_factors": [[2, 1], 2, 2, 1, 2, 2, [2, 3]],
        "attn_blocks": [0, 0, 0, 1, 1, 0, 0],
        "dropout": 0.0,
    },
    "visual_encoder": {
        "in_channels": 48,
        "block_out_channels": [64, 128, 256, 256, 512, 1024, 2048, 2048],
        "downsample_factors": [[1, 2], 2, 2, 2, 2, 2, 2, 2],
        "attn_blocks": [0, 0, 0, 0, 1, 1, 0, 0],
        "dropout": 0.0,
    },
}
SYNCNET_16_PIXEL: dict[str, Any] = copy.deepcopy(SYNCNET_16_PIXEL_ATTN)
SYNCNET_16_PIXEL["audio_encoder"]["attn_blocks"] = [0] * 7
SYNCNET_16_PIXEL["visual_encoder"]["attn_blocks"] = [0] * 8

# A small config keeping every code path (both encoders, every downsample kind, attention in
# both), for tests and `--weights random-small`: takes 32x32 crops, (B, 48, 16, 32).
SYNCNET_SMALL: dict[str, Any] = {
    "audio_encoder": {
        "in_channels": 1,
        "block_out_channels": [32, 32, 32, 32, 32, 32, 96],
        "downsample_factors": [[2, 1], 2, 2, 1, 2, 2, [2, 3]],
        "attn_blocks": [0, 0, 0, 1, 1, 0, 0],
        "dropout": 0.0,
    },
    "visual_encoder": {
        "in_channels": 48,
        "block_out_channels": [32, 32, 32, 32, 96],
        "downsample_factors": [[1, 2], 2, 2, 2, 2],
        "attn_blocks": [0, 1, 1, 0, 0],
        "dropout": 0.0,
    },
}

CONFIGS = {"syncnet_16_pixel_attn": SYNCNET_16_PIXEL_ATTN, "syncnet_16_pixel": SYNCNET_16_PIXEL, "small": SYNCNET_SMALL}


def _pad_for(factor: int | Sequence[int]) -> tuple[int, int, int, int]:
    """F.pad amounts (left, right, top, bottom) before a downsample conv of stride `factor`."""
    if isinstance(factor, int):
        return (0, 1, 0, 1)
    factor = tuple(int(f) for f in factor)
    if factor == (1, 2):
        return (0, 1, 1, 1)
    if factor == (2, 1):
        return (1, 1, 0, 1)
    if factor == (2, 3):
        return (0, 1, 0, 1)
    raise ValueError(f"unsupported downsample factor {list(factor)}")


def _is_identity(factor: int | Sequence[int]) -> bool:
    return factor == 1 if isinstance(factor, int) else all(int(f) == 1 for f in factor)


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, factor: int | Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, in_channels, eps=GROUP_NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, out_channels, eps=GROUP_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        if _is_identity(factor):
            self.downsample_conv, self.pad = None, None
        else:
            stride = factor if isinstance(factor, int) else tuple(int(f) for f in factor)
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, 3, stride=stride)
            self.pad = _pad_for(factor)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = h + shortcut
        if self.downsample_conv is not None:
            h = self.downsample_conv(F.pad(h, self.pad))
        return h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = ATTENTION_HEADS):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, tokens, self.heads, channels // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x)))
        out = out.transpose(1, 2).reshape(batch, tokens, channels)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(channels, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, channels: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(channels, channels * mult), nn.Dropout(0.0), nn.Linear(channels * mult, channels)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class AttentionBlock2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # Registration order gives upstream's state-dict order (which seeded initialisation follows).
        self.norm1 = nn.GroupNorm(GROUPS, channels, eps=GROUP_NORM_EPS)
        self.norm2 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.norm3 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.ff = FeedForward(channels)
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1)
        self.attn = Attention(channels)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.conv_in(self.norm1(x))
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        h = self.attn(self.norm2(h)) + h
        h = self.ff(self.norm3(h)) + h
        h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return self.conv_out(h) + x


class SyncEncoder(nn.Module):
    """One tower (audio or visual): conv_in, down_blocks, norm_out + ReLU, flattened to (B, C)."""

    def __init__(
        self,
        in_channels: int,
        block_out_channels: Sequence[int],
        downsample_factors: Sequence[int | Sequence[int]],
        attn_blocks: Sequence[int],
        dropout: float = 0.0,
    ):
        super().__init__()
        if not (len(block_out_channels) == len(downsample_factors) == len(attn_blocks)):
            raise ValueError("block_out_channels, downsample_factors and attn_blocks must have one entry per block")
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        previous = block_out_channels[0]
        for width, factor, attention in zip(block_out_channels, downsample_factors, attn_blocks):
            blocks.append(ResnetBlock2D(previous, width, factor, dropout))
            if attention:
                blocks.append(AttentionBlock2D(width))
            previous = width
        self.down_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(GROUPS, previous, eps=GROUP_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        h = F.relu(self.norm_out(h))
        return h.reshape(h.shape[0], -1)


class StableSyncNet(nn.Module):
    """Audio and visual encoders; `forward` gives L2-normalised (visual, audio) embeddings."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(dict(config))
        self.audio_encoder = SyncEncoder(**self.config["audio_encoder"])
        self.visual_encoder = SyncEncoder(**self.config["visual_encoder"])

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str, *, meta: bool = False) -> "StableSyncNet":
        """Build from a `model` section (a dict) or a known name (`CONFIGS`); `meta`: no memory."""
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"unknown SyncNet config {config!r}; known: {', '.join(CONFIGS)}")
            config = CONFIGS[config]
        if meta:
            with torch.device("meta"):
                return cls(config)
        return cls(config)

    def raw_embeddings(self, image_sequences: Tensor, audio_sequences: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder outputs (B, C) before normalisation (non-negative)."""
        return self.visual_encoder(image_sequences), self.audio_encoder(audio_sequences)

    def embed_visual(self, image_sequences: Tensor) -> Tensor:
        return F.normalize(self.visual_encoder(image_sequences), p=2, dim=1)

    def embed_audio(self, audio_sequences: Tensor) -> Tensor:
        return F.normalize(self.audio_encoder(audio_sequences), p=2, dim=1)

    def forward(self, image_sequences: Tensor, audio_sequences: Tensor) -> tuple[Tensor, Tensor]:
        return self.embed_visual(image_sequences), self.embed_audio(audio_sequences)


def sync_probability(visual_embeds: Tensor, audio_embeds: Tensor) -> Tensor:
    """Cosine similarity per sample, (B,): used directly as the probability of being in sync."""
    return F.cosine_similarity(visual_embeds, audio_embeds)


def sync_loss(visual_embeds: Tensor, audio_embeds: Tensor, target: Tensor | float) -> Tensor:
    """Binary cross-entropy of the sync probability against `target` (1 in sync, 0 not), per sample (B,)."""
    probability = sync_probability(visual_embeds, audio_embeds)
    target = torch.as_tensor(target, dtype=probability.dtype, device=probability.device).expand_as(probability)
    return F.binary_cross_entropy(probability, target, reduction="none")


def seeded_initialisation(model: StableSyncNet, seed: int) -> StableSyncNet:
    """Redraw every parameter from `seed`, in state-dict order, in place (random weights for tests).

    Conv/linear weights randn / sqrt(fan_in), their biases 0.1 randn; GroupNorm/LayerNorm
    weights 0.5 + rand, their biases 0.2 randn (the rule of the parity fixture's weights, which
    keeps activations of a deep random tower in a useful range).
    """
    generator = torch.Generator().manual_seed(int(seed))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            owner_name, _, kind = name.rpartition(".")
            owner = modules[owner_name]
            shape = parameter.shape
            if isinstance(owner, (nn.GroupNorm, nn.LayerNorm)):
                value = 0.5 + torch.rand(shape, generator=generator) if kind == "weight" else 0.2 * torch.randn(shape, generator=generator)
            elif kind == "weight":
                fan_in = parameter[0].numel()
                value = torch.randn(shape, generator=generator) / fan_in**0.5
            else:
                value = 0.1 * torch.randn(shape, generator=generator)
            parameter.copy_(value.to(parameter.dtype))
    return model


def stack_frames(crops: Tensor) -> Tensor:
    """(B, 16, res, res, 3) uint8 RGB crops -> (B, 48, res/2, res) float32 visual input.

    x / 255, then (x - 0.5) / 0.5, channel 3*f + c, lower half rows [res//2, res).
    """
    if crops.ndim != 5 or crops.shape[-1] != 3:
        raise ValueError(f"expected crops (B, F, H, W, 3), got {tuple(crops.shape)}")
    x = crops.float() / 255.0
    x = (x - 0.5) / 0.5
    batch, frames, height, width, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(batch, frames * 3, height, width)
    return x[:, :, height // 2 :, :].contiguous()


def check_syncnet_keys(
    state_dict_shapes: Mapping[str, Sequence[int]], config: Mapping[str, Any], *, path: str | None = None
) -> None:
    """Raise CheckpointError unless the keys and shapes equal those of the configured SyncNet exactly."""
    from ..errors import CheckpointError
    from .unet_loading import KeyDiff

    meta = StableSyncNet.from_config(config, meta=True).state_dict()
    diff = KeyDiff.between({key: value.shape for key, value in meta.items()}, state_dict_shapes)
    problems = diff.problems()
    if not problems:
        return
    found, missing, unexpected = diff.found, diff.missing, diff.unexpected
    hint = "expected LatentSync's stable_syncnet.pt (configs/syncnet/syncnet_16_pixel_attn.yaml)"
    if any(".attn." in key for key in missing) and not any(".attn." in key for key in found):
        hint = "the checkpoint has no attention blocks: use the syncnet_16_pixel config"
    elif any(".attn." in key for key in unexpected):
        hint = "the checkpoint has attention blocks: use the syncnet_16_pixel_attn config"
    raise CheckpointError("checkpoint does not fit the SyncNet config: " + "; ".join(problems), path=path, hint=hint)


def config_for_keys(keys) -> str:
    """`syncnet_16_pixel_attn` when the checkpoint has attention blocks, else `syncnet_16_pixel`
    (the two upstream pixel-space configs; the key check then confirms every shape)."""
    return "syncnet_16_pixel_attn" if any(".attn." in key for key in keys) else "syncnet_16_pixel"


def load_syncnet_checkpoint(
    path, config: Mapping[str, Any] | str = "syncnet_16_pixel_attn", *, device="cpu", dtype: torch.dtype = torch.float32
) -> StableSyncNet:
    """Build the SyncNet from `config` and load `path` strictly (torch `weights_only`, or safetensors).

    `stable_syncnet.pt` is a torch dict holding the tensors under `"state_dict"`; a bare state
    dict or a .safetensors file works too. `config="auto"` picks the upstream config by whether
    the checkpoint has attention blocks (`config_for_keys`). A missing, empty, unsafe or mismatched file raises
    CheckpointError naming it. Returns the model in eval mode on `device` / `dtype`.
    """
    from .unet_loading import read_state_dict

    state_dict = read_state_dict(path)
    if config == "auto":
        config = config_for_keys(state_dict)
    model = StableSyncNet.from_config(config, meta=True)
    check_syncnet_keys({key: value.shape for key, value in state_dict.items()}, model.config, path=str(path))
    converted = {key: value.to(device=device, dtype=dtype) for key, value in state_dict.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
