"""LatentSync UNet3D (1.5 and 1.6 share it): an SD-1.5-layout UNet with audio
cross-attention and temporal motion modules, built from the upstream config.

Key names follow bytedance/LatentSync, so official `latentsync_unet.pt` checkpoints
load strictly (see `unet_loading.py`).

Forward: `sample` (B, C_in, F, h, w), `timestep` (scalar or (B,)), audio tokens
`encoder_hidden_states` (B*F, S, D) or (B, F, S, D) -> `UNet3DOutput.sample` (B, C_out, F, h, w).
Inside, frames are folded into the batch (see `unet_blocks.py`).

DeepCache (arXiv 2312.00858), natively. The UNet's skip features are numbered in
the order they are produced: 0 is `conv_in`'s output, then one per down-block
layer and downsampler (12 in all for the SD layout). Up-layer u consumes skip
`num_skips - 1 - u`. With `deepcache_branch=c`:

- a full step (`cached_features=None`) runs everything and, with
  `return_deep_features=True`, returns the hidden state that enters the up layer
  consuming skip c (the "deep feature");
- a cached step (`cached_features=` that feature) runs only `conv_in`, the down
  units producing skips 1..c, and the up layers consuming skips c..0, feeding the
  cached deep feature in where the skipped deep branch would have ended.

This is the semantics of `the DeepCache SD helper's set_params(cache_interval, cache_branch_id)`
(block = c // 3, layer = c % 3), which upstream LatentSync runs with interval 3 and
branch 0: on cached steps only `conv_in`, the last layer of the last up block and the
output head run. (The helper wraps resnets and attentions but not motion modules, so
upstream still recomputes two motion modules of the last up block on cached inputs;
their outputs equal the cached ones, so skipping them changes nothing but the cost.)
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import InvalidInputError
from .motion_module import TemporalAttention
from .unet_blocks import (
    CrossAttnDownBlock3D,
    CrossAttnUpBlock3D,
    DownBlock3D,
    FrameSpanningGroupNorm,
    GEGLU,
    PerFrameGroupNorm,
    SilentAudio,
    UNetMidBlock3DCrossAttn,
    UpBlock3D,
)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BUILTIN_CONFIGS = {"1.6": "unet_1.6_512.json", "1.5": "unet_1.5_256.json", "small": "unet_small.json"}

ATTENTION_BACKENDS: dict[str, tuple[SDPBackend, ...] | None] = {
    "auto": None,
    "flash": (SDPBackend.FLASH_ATTENTION,),
    "efficient": (SDPBackend.EFFICIENT_ATTENTION,),
    "math": (SDPBackend.MATH,),
    "cudnn": (SDPBackend.CUDNN_ATTENTION,),
}
TEMPORAL_ATTENTION_KERNELS = ("sdpa", "triton")
GEGLU_KERNELS = ("torch", "triton")

_DOWN_BLOCKS = {"DownBlock3D": DownBlock3D, "CrossAttnDownBlock3D": CrossAttnDownBlock3D}
_UP_BLOCKS = {"UpBlock3D": UpBlock3D, "CrossAttnUpBlock3D": CrossAttnUpBlock3D}


@dataclass
class UNet3DOutput(BaseOutput):
    """`sample`: (B, C_out, F, h, w). `deep_features`: the DeepCache feature to pass as
    `cached_features` on later steps, shaped (B, F, C, h', w') (batch first, so the CFG
    half can be sliced off), or None."""

    sample: torch.Tensor
    deep_features: torch.Tensor | None = None


class UNet3DConditionModel(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 13,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        mid_block_type: str = "UNetMidBlock3DCrossAttn",
        up_block_types: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 384,
        attention_head_dim: int | tuple[int, ...] = 8,
        resnet_time_scale_shift: str = "default",
        use_inflated_groupnorm: bool = False,
        use_motion_module: bool = True,
        motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8),
        motion_module_mid_block: bool = False,
        motion_module_decoder_only: bool = False,
        motion_module_type: str | None = "Vanilla",
        motion_module_kwargs: dict | None = None,
        add_audio_layer: bool = True,
        # Upstream options this implementation supports only at their defaults.
        only_cross_attention: bool = False,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
    ):
        super().__init__()
        unsupported = {
            "act_fn": (act_fn, "silu"),
            "resnet_time_scale_shift": (resnet_time_scale_shift, "default"),
            "mid_block_type": (mid_block_type, "UNetMidBlock3DCrossAttn"),
            "only_cross_attention": (only_cross_attention, False),
            "dual_cross_attention": (dual_cross_attention, False),
            "use_linear_projection": (use_linear_projection, False),
            "class_embed_type": (class_embed_type, None),
            "num_class_embeds": (num_class_embeds, None),
        }
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"UNet3D config: {name}={value!r} is not supported (only {supported!r})")
        if use_motion_module and motion_module_type != "Vanilla":
            raise ValueError(f"UNet3D config: motion_module_type={motion_module_type!r} is not supported")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError("UNet3D config: down_block_types, up_block_types and block_out_channels differ in length")

        norm_eps = float(norm_eps)
        heads = (
            (attention_head_dim,) * len(down_block_types)
            if isinstance(attention_head_dim, int)
            else tuple(attention_head_dim)
        )
        time_embed_dim = block_out_channels[0] * 4
        spans_frames = not use_inflated_groupnorm
        mm_kwargs = dict(motion_module_kwargs or {})

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)

        self.down_blocks = nn.ModuleList()
        output_channels = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            if block_type not in _DOWN_BLOCKS:
                raise ValueError(f"UNet3D config: unknown down block type {block_type!r}")
            input_channels, output_channels = output_channels, block_out_channels[i]
            kwargs: dict[str, Any] = dict(
                in_channels=input_channels,
                out_channels=output_channels,
                temb_channels=time_embed_dim,
                num_layers=layers_per_block,
                resnet_groups=norm_num_groups,
                resnet_eps=norm_eps,
                add_downsample=i < len(block_out_channels) - 1,
                downsample_padding=downsample_padding,
                norm_spans_frames=spans_frames,
                use_motion_module=bool(
                    use_motion_module and 2**i in motion_module_resolutions and not motion_module_decoder_only
                ),
                motion_module_kwargs=mm_kwargs,
            )
            if block_type == "CrossAttnDownBlock3D":
                kwargs.update(
                    attention_heads=heads[i], cross_attention_dim=cross_attention_dim, add_audio_layer=add_audio_layer
                )
            self.down_blocks.append(_DOWN_BLOCKS[block_type](**kwargs))

        self.mid_block = UNetMidBlock3DCrossAttn(
            in_channels=block_out_channels[-1],
            temb_channels=time_embed_dim,
            resnet_groups=norm_num_groups,
            resnet_eps=norm_eps,
            output_scale_factor=mid_block_scale_factor,
            attention_heads=heads[-1],
            cross_attention_dim=cross_attention_dim,
            add_audio_layer=add_audio_layer,
            norm_spans_frames=spans_frames,
            use_motion_module=bool(use_motion_module and motion_module_mid_block),
            motion_module_kwargs=mm_kwargs,
        )

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        reversed_heads = list(reversed(heads))
        output_channels = reversed_channels[0]
        num_levels = len(block_out_channels)
        for i, block_type in enumerate(up_block_types):
            if block_type not in _UP_BLOCKS:
                raise ValueError(f"UNet3D config: unknown up block type {block_type!r}")
            prev_output_channels, output_channels = output_channels, reversed_channels[i]
            kwargs = dict(
                in_channels=reversed_channels[min(i + 1, num_levels - 1)],
                prev_output_channels=prev_output_channels,
                out_channels=output_channels,
                temb_channels=time_embed_dim,
                num_layers=layers_per_block + 1,
                resnet_groups=norm_num_groups,
                resnet_eps=norm_eps,
                add_upsample=i < num_levels - 1,
                norm_spans_frames=spans_frames,
                use_motion_module=bool(use_motion_module and 2 ** (num_levels - 1 - i) in motion_module_resolutions),
                motion_module_kwargs=mm_kwargs,
            )
            if block_type == "CrossAttnUpBlock3D":
                kwargs.update(
                    attention_heads=reversed_heads[i],
                    cross_attention_dim=cross_attention_dim,
                    add_audio_layer=add_audio_layer,
                )
            self.up_blocks.append(_UP_BLOCKS[block_type](**kwargs))

        norm_cls = FrameSpanningGroupNorm if spans_frames else PerFrameGroupNorm
        self.conv_norm_out = norm_cls(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

        # Upstream zero-initialises the input and output convolutions (motion-module
        # output projections too, in VanillaTemporalModule).
        for conv in (self.conv_in, self.conv_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

        self.num_skips = 1 + sum(block.num_units for block in self.down_blocks)
        if self.num_skips != sum(len(block.resnets) for block in self.up_blocks):
            raise ValueError("UNet3D config: the up path does not consume every skip feature")
        self._sdpa_backends: tuple[SDPBackend, ...] | None = None

    def to(self, *args, **kwargs):
        # ModelMixin.to warns about "modules kept in float32" on every dtype cast (this
        # model keeps none); the plain nn.Module behaviour is what we want.
        return nn.Module.to(self, *args, **kwargs)

    # ------------------------------------------------------------------ levers

    def set_attention_backend(self, backend: str) -> None:
        """'auto' (torch picks), 'flash', 'efficient', 'math' or 'cudnn': every attention in
        the forward runs under `torch.nn.attention.sdpa_kernel` with that backend only."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend must be one of {sorted(ATTENTION_BACKENDS)}, got {backend!r}")
        self._sdpa_backends = ATTENTION_BACKENDS[backend]
        # CUDA flash attention has no masked kernel, so packed temporal rows (block-diagonal
        # mask) would find no backend at all; they take the memory-efficient kernel (math
        # on a CPU) while every other attention keeps flash.
        packed = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH] if backend == "flash" else None
        for module in self.modules():
            if isinstance(module, TemporalAttention):
                module.packed_backends = packed

    def set_temporal_attention_packing(self, pack: int) -> None:
        """Run the motion modules' attentions `pack` pixel sequences per SDPA row (1 = off)."""
        if not isinstance(pack, int) or pack < 1:
            raise ValueError(f"temporal attention packing must be a positive integer, got {pack!r}")
        for module in self.modules():
            if isinstance(module, TemporalAttention):
                module.pack_sequences = pack

    def set_temporal_attention_kernel(self, kernel: str) -> None:
        """'sdpa' (torch's attention, packed per `set_temporal_attention_packing`) or 'triton'
        (one Triton kernel for all of a motion module's 16-frame sequences; packing then
        does not apply). Raises RuntimeError when Triton cannot run on the model's device."""
        if kernel not in TEMPORAL_ATTENTION_KERNELS:
            raise ValueError(f"temporal attention kernel must be one of {list(TEMPORAL_ATTENTION_KERNELS)}, got {kernel!r}")
        op = None
        if kernel == "triton":
            self._require_triton("temporal attention")
            from ..kernels.short_attention import short_self_attention as op
        for module in self.modules():
            if isinstance(module, TemporalAttention):
                module.short_attention = op

    def set_geglu_kernel(self, kernel: str) -> None:
        """'torch' (two matmuls, then the gating) or 'triton' (one matmul with the gating
        fused, writing only the gated half) for every feed-forward's GEGLU projection.
        Raises RuntimeError when Triton cannot run on the model's device."""
        if kernel not in GEGLU_KERNELS:
            raise ValueError(f"GEGLU kernel must be one of {list(GEGLU_KERNELS)}, got {kernel!r}")
        op = None
        if kernel == "triton":
            self._require_triton("GEGLU")
            from ..kernels.geglu_linear import geglu_linear as op
        for module in self.modules():
            if isinstance(module, GEGLU):
                module.fused = op

    @property
    def geglu_kernel(self) -> str:
        kernels = {m.fused is not None for m in self.modules() if isinstance(m, GEGLU)}
        return "triton" if kernels == {True} else "torch"

    def _require_triton(self, what: str) -> None:
        from ..kernels import triton_available

        device_type = next(self.parameters()).device.type
        if not triton_available(device_type):
            raise RuntimeError(f"the Triton {what} kernel cannot run on {device_type} here "
                               "(it needs the `triton` package and a CUDA device)")

    @property
    def temporal_attention_kernel(self) -> str:
        kernels = {m.short_attention is not None for m in self.modules() if isinstance(m, TemporalAttention)}
        return "triton" if kernels == {True} else "sdpa"

    @property
    def temporal_attention_packing(self) -> int:
        packs = {m.pack_sequences for m in self.modules() if isinstance(m, TemporalAttention)}
        return packs.pop() if len(packs) == 1 else 1

    @property
    def attention_backend(self) -> str:
        for name, backends in ATTENTION_BACKENDS.items():
            if backends == self._sdpa_backends:
                return name
        return "auto"

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        *,
        deepcache_branch: int | None = None,
        cached_features: torch.Tensor | None = None,
        return_deep_features: bool = False,
        silent_audio_batch: int = 0,
        cfg_shared_prefix: bool = False,
        return_dict: bool = True,
    ) -> UNet3DOutput | tuple:
        """`silent_audio_batch`: the first that many batch items' audio is all zeros (CFG's
        unconditional half; the caller vouches for it, nothing is checked on the device).
        Their audio cross-attentions then add the output bias instead of attending
        (`SilentAudio`): the same result for less work.

        `cfg_shared_prefix`: the batch's first half is a copy of its second half (sample and
        timestep) and differs only in audio (CFG: unconditional, then conditional; the caller
        vouches for it). Everything before the first audio cross-attention (`conv_in`, the
        first ResNet, the first self-attention) then runs once, on the second half, and is
        doubled there: the same result for less work."""
        args = (sample, timestep, encoder_hidden_states, deepcache_branch, cached_features, return_deep_features,
                silent_audio_batch, cfg_shared_prefix)
        if self._sdpa_backends is None:
            output = self._forward(*args)
        else:
            with sdpa_kernel(list(self._sdpa_backends)):
                output = self._forward(*args)
        if not return_dict:
            return (output.sample, output.deep_features)
        return output

    def _uses_channels_last(self) -> bool:
        weight = self.conv_in.weight
        return weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(
            memory_format=torch.channels_last
        )

    def _time_embedding(self, timestep, batch: int, device: torch.device) -> torch.Tensor:
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=device)
        timestep = timestep.to(device).reshape(-1)
        if timestep.shape[0] == 1:
            timestep = timestep.expand(batch)
        elif timestep.shape[0] != batch:
            raise ValueError(f"timestep has {timestep.shape[0]} entries for a batch of {batch}")
        t_emb = self.time_proj(timestep).to(self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(t_emb)

    def _forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor | None,
        deepcache_branch: int | None,
        cached_features: torch.Tensor | None,
        return_deep_features: bool,
        silent_audio_batch: int = 0,
        cfg_shared_prefix: bool = False,
    ) -> UNet3DOutput:
        if sample.dim() != 5:
            raise ValueError(f"sample must be (batch, channels, frames, h, w), got shape {tuple(sample.shape)}")
        batch, _, num_frames, height, width = sample.shape
        dtype = self.conv_in.weight.dtype
        caching = deepcache_branch is not None
        if caching and not 0 <= deepcache_branch < self.num_skips:
            raise ValueError(f"deepcache_branch must be in 0..{self.num_skips - 1}, got {deepcache_branch}")
        if cached_features is not None and not caching:
            raise ValueError("cached_features needs deepcache_branch")
        if return_deep_features and not caching:
            raise ValueError("return_deep_features needs deepcache_branch")
        cached_step = cached_features is not None

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        # (B, C, F, h, w) -> (B*F, C, h, w); the input is small, so this copy is cheap.
        memory_format = torch.channels_last if self._uses_channels_last() else torch.contiguous_format
        x = sample.to(dtype).transpose(1, 2).flatten(0, 1).contiguous(memory_format=memory_format)

        audio = encoder_hidden_states
        if audio is not None:
            if audio.dim() == 4:
                audio = audio.flatten(0, 1)
            if audio.shape[0] != batch * num_frames:
                raise ValueError(
                    f"encoder_hidden_states has {audio.shape[0]} rows; expected batch*frames = {batch * num_frames}"
                )
            audio = audio.to(dtype)
        if silent_audio_batch:
            if audio is None or not 0 < silent_audio_batch < batch:
                raise ValueError(f"silent_audio_batch must be in 1..{batch - 1} with audio given, "
                                 f"got {silent_audio_batch}")
            silent_rows = silent_audio_batch * num_frames
            audio = SilentAudio(tokens=audio[silent_rows:], silent_rows=silent_rows)
        if cfg_shared_prefix:
            if batch % 2 or (silent_audio_batch and silent_audio_batch != batch // 2):
                raise ValueError(
                    f"cfg_shared_prefix needs an even batch whose halves are CFG's (silent_audio_batch "
                    f"{batch // 2} or 0); got batch {batch}, silent_audio_batch {silent_audio_batch}"
                )
            x = x[batch // 2 * num_frames:]  # the first half is the same input: computed once

        temb_act = F.silu(self._time_embedding(timestep, batch, sample.device))

        # Down path: skip 0 is conv_in's output; a cached step needs skips 0..branch only.
        h = self.conv_in(x)
        skips = [torch.cat([h, h]) if cfg_shared_prefix else h]
        needed = deepcache_branch if cached_step else self.num_skips - 1
        for index, block in enumerate(self.down_blocks):
            remaining = needed - (len(skips) - 1)
            if remaining <= 0:
                break
            h, block_skips = block(h, temb_act, audio, num_frames, num_units=min(remaining, block.num_units),
                                   fork=cfg_shared_prefix and index == 0)
            skips.extend(block_skips)

        if not cached_step:
            h = self.mid_block(h, temb_act, audio, num_frames)

        # Up path: up layer u consumes skips[num_skips - 1 - u]; the deep feature enters layer `boundary`.
        boundary = self.num_skips - 1 - deepcache_branch if caching else None
        deep_features = None
        if cached_step:
            if cached_features.dim() != 5:
                raise ValueError(
                    f"cached_features must be (batch, frames, C, h, w), got shape {tuple(cached_features.shape)}"
                )
            h = cached_features.flatten(0, 1).to(dtype)
            if h.shape[0] != batch * num_frames:
                raise ValueError(
                    f"cached_features hold {cached_features.shape[0]}x{cached_features.shape[1]} frames; "
                    f"the sample has {batch}x{num_frames}"
                )
        first_layer = 0
        for block in self.up_blocks:
            n = len(block.resnets)
            last_layer = first_layer + n
            start = 0
            if boundary is not None and first_layer <= boundary < last_layer:
                start = boundary - first_layer
                if not cached_step:
                    if start > 0:  # the boundary falls inside this block: run the layers before it
                        before = self._skips_for(skips, first_layer, 0, start)
                        h = block(h, before, temb_act, audio, num_frames, start=0, stop=start)
                    if return_deep_features:
                        deep_features = h.unflatten(0, (batch, num_frames))
            elif cached_step and last_layer <= boundary:
                first_layer = last_layer  # wholly in the deep branch: its output is in the cache
                continue
            upsample_size = skips[self.num_skips - 1 - last_layer].shape[-2:] if block.upsamplers is not None else None
            block_skips = self._skips_for(skips, first_layer, start, n)
            h = block(h, block_skips, temb_act, audio, num_frames, upsample_size=upsample_size, start=start, stop=n)
            first_layer = last_layer

        h = F.silu(self.conv_norm_out(h, num_frames), inplace=True)
        h = self.conv_out(h)
        out = h.unflatten(0, (batch, num_frames)).transpose(1, 2).contiguous()
        return UNet3DOutput(sample=out, deep_features=deep_features)

    def _skips_for(self, skips: list[torch.Tensor], first_layer: int, start: int, stop: int) -> list[torch.Tensor]:
        """Skip features for layers start..stop-1 of the up block whose first global layer is `first_layer`."""
        return [skips[self.num_skips - 1 - (first_layer + i)] for i in range(start, stop)]


# --------------------------------------------------------------------------- helpers


def is_deepcache_full_step(step_index: int, interval: int) -> bool:
    """Upstream DeepCache ('uniform' mode): step i of a chunk runs the whole UNet when i % interval == 0."""
    return interval <= 1 or step_index % interval == 0


def set_attention_backend(model: UNet3DConditionModel, backend: str) -> None:
    """Route every attention of `model` through one SDPA backend ('auto', 'flash', 'efficient', 'math')."""
    model.set_attention_backend(backend)


@contextlib.contextmanager
def attention_backend(model: UNet3DConditionModel, backend: str) -> Iterator[UNet3DConditionModel]:
    """Temporarily set the attention backend of `model`."""
    previous = model.attention_backend
    model.set_attention_backend(backend)
    try:
        yield model
    finally:
        model.set_attention_backend(previous)


_REQUIRED_KEYS = ("block_out_channels", "down_block_types", "up_block_types", "in_channels", "out_channels")


def normalize_unet_config(config: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """Coerce types PyYAML leaves as strings (`norm_eps: 1e-5`) and check the required fields."""
    config = dict(config)
    for key in _REQUIRED_KEYS:
        if key not in config:
            raise InvalidInputError(f"UNet config lacks the field {key!r}", path=source)
    for key in ("norm_eps", "mid_block_scale_factor"):
        if key in config:
            try:
                config[key] = float(config[key])
            except (TypeError, ValueError):
                raise InvalidInputError(f"UNet config field {key!r} is not a number: {config[key]!r}", path=source)
    return config


def load_unet_config(path: str | Path) -> dict[str, Any]:
    """Read a UNet config: an upstream training yaml (the `model` key), a JSON config,
    or a manifest holding a `config` key. Returns a plain dict for `from_config`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError("UNet config file not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # yaml.YAMLError, json.JSONDecodeError
        raise InvalidInputError(f"cannot parse UNet config: {error}", path=str(path)) from error
    if not isinstance(data, dict):
        raise InvalidInputError("UNet config is not a mapping", path=str(path))
    for wrapper in ("model", "config"):
        if wrapper in data and isinstance(data[wrapper], dict) and "block_out_channels" in data[wrapper]:
            data = data[wrapper]
            break
    return normalize_unet_config(data, source=str(path))


def builtin_unet_config(name: str) -> dict[str, Any]:
    """'1.6' (512 px), '1.5' (256 px; the same architecture) or 'small' (the parity-test size)."""
    if name not in BUILTIN_CONFIGS:
        raise InvalidInputError(f"unknown built-in UNet config {name!r}; choose one of {sorted(BUILTIN_CONFIGS)}")
    return load_unet_config(CONFIG_DIR / BUILTIN_CONFIGS[name])


def randomize_zero_initialized(model: UNet3DConditionModel, *, seed: int = 0, std: float = 0.02) -> None:
    """Give conv_in, conv_out and every motion-module output projection random weights.

    A freshly built UNet has them at zero (as upstream), so every output would be zero;
    random-weight runs and tests call this. Deterministic for a given seed.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = [model.conv_in, model.conv_out]
    targets += [m.temporal_transformer.proj_out for m in model.modules() if hasattr(m, "temporal_transformer")]
    with torch.no_grad():
        for module in targets:
            for param in module.parameters():
                values = torch.randn(param.shape, generator=generator) * std
                param.copy_(values.to(param.dtype))
