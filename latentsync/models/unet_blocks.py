"""Building blocks of the LatentSync UNet3D: ResNet, spatial transformer, up/down/mid blocks.

Layout. Upstream keeps activations as 5-D `(batch, channels, frames, h, w)` and
rearranges to `(batch*frames, channels, h, w)` around every convolution and
attention, which costs a copy each time. Here activations stay 4-D with frames
folded into the batch, `(B*F, C, h, w)` (frame-major within each batch item), from
the input convolution to the output convolution. Convolutions are per-frame 2-D
convolutions either way (upstream's `InflatedConv3d`), so they run natively.

Two places need the frame structure back:
- the ResNet GroupNorms (and the final norm) normalise 5-D tensors upstream, so
  their statistics span all frames of a chunk. `group_norm_across_frames`
  computes exactly that on the folded layout, without a transpose.
- the temporal motion modules (see `motion_module.py`) attend across frames.

Module and parameter names follow upstream so official checkpoints load strictly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel



# --------------------------------------------------------------------------- tensor transforms


def group_norm_across_frames(
    x: torch.Tensor,
    num_frames: int,
    num_groups: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """GroupNorm of `(B*F, C, h, w)` whose statistics span the F frames of each batch item.

    Equals `nn.GroupNorm` applied to the 5-D `(B, C, F, h, w)` tensor (upstream). Statistics
    are taken in float32 (as the native kernel does for half inputs), then one fused
    multiply-add applies `x * scale + shift`. Works for any memory format.
    """
    bf, channels, height, width = x.shape
    batch = bf // num_frames
    # (B, F, G, C/G, h, w): splitting dims is always a view, whatever the strides.
    grouped = x.unflatten(0, (batch, num_frames)).unflatten(2, (num_groups, channels // num_groups))
    stats_input = grouped if grouped.dtype in (torch.float32, torch.float64) else grouped.float()
    var, mean = torch.var_mean(stats_input, dim=(1, 3, 4, 5), correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    scale = rstd * weight.view(1, 1, num_groups, -1, 1, 1).to(rstd.dtype)
    shift = bias.view(1, 1, num_groups, -1, 1, 1).to(rstd.dtype) - mean * scale
    out = torch.addcmul(shift.to(x.dtype), grouped, scale.to(x.dtype))
    return out.flatten(2, 3).flatten(0, 1)


def add_per_batch(x: torch.Tensor, per_batch: torch.Tensor, num_frames: int) -> torch.Tensor:
    """x `(B*F, C, h, w)` + per_batch `(B, C)`, broadcast over frames and pixels."""
    out = x.unflatten(0, (-1, num_frames)) + per_batch[:, None, :, None, None]
    return out.flatten(0, 1)


def image_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, h*w, C). Free when x is channels-last."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


def tokens_to_image(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, h*w, C) -> (N, C, h, w) as a channels-last strided view (no copy)."""
    n, _, c = tokens.shape
    return tokens.view(n, height, width, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- attention


def packed_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, pack: int) -> torch.Tensor:
    """Self-attention of N short sequences `(N, L, heads*d)`, `pack` sequences per SDPA row.

    Attention kernels tile the sequence in blocks of 64-128 tokens, so N sequences of 16
    tokens (the motion modules: one per pixel, across 16 frames) leave most of every
    tile empty and run ~10x slower than their memory traffic allows. Packing `pack`
    neighbouring sequences into one row of `pack*L` tokens with a block-diagonal mask
    fills the tiles; the mask gives every key of another sequence exactly zero weight, so
    the result is the same attention. Requires N % pack == 0.
    """
    n, length, inner = q.shape

    def rows(x: torch.Tensor) -> torch.Tensor:  # (N, L, H*d) -> (N/pack, H, pack*L, d), a view
        return x.reshape(n // pack, pack * length, heads, inner // heads).transpose(1, 2)

    sequence_of_token = torch.arange(pack * length, device=q.device) // length
    same_sequence = sequence_of_token[:, None] == sequence_of_token[None, :]
    out = F.scaled_dot_product_attention(rows(q), rows(k), rows(v), attn_mask=same_sequence)
    return out.transpose(1, 2).reshape(n, length, inner)


@dataclass
class SilentAudio:
    """Audio tokens for the cross-attentions when the first `silent_rows` rows of the batch
    hear all-zero audio (classifier-free guidance's unconditional half). `tokens` holds the
    audio of the remaining rows only.

    Zero audio gives zero keys and values (`to_k`/`to_v` have no bias), so for those rows
    every audio cross-attention returns exactly its output projection's bias; the blocks
    add that bias instead of computing it. Same result, half the cross-attention work.
    """

    tokens: torch.Tensor
    silent_rows: int


class FrameSpanningGroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose statistics span the frames of each chunk (upstream: 5-D GroupNorm)."""

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        return group_norm_across_frames(x, num_frames, self.num_groups, self.weight, self.bias, self.eps)


class PerFrameGroupNorm(nn.GroupNorm):
    """nn.GroupNorm on the folded layout: statistics per frame (upstream's `InflatedGroupNorm`)."""

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class Attention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`.

    Self-attention projects q, k and v with one matmul (the three weights concatenated),
    cross-attention k and v with one. Keys: `to_q`, `to_k`, `to_v` (no bias), `to_out.0`.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.is_cross_attention = context_dim is not None
        context_dim = context_dim if context_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(0.0)])
        # Self-attention only: run `pack_sequences` sequences per SDPA row (see
        # packed_self_attention); 1 = one sequence per row, as upstream.
        self.pack_sequences = 1
        # SDPA backends for the packed (masked) calls when the model's own choice has no
        # masked kernel (CUDA flash attention); None = the model's choice.
        self.packed_backends: list | None = None
        # Self-attention only: a kernel taking the fused projection `(N, L, 3*inner)` and
        # returning `(N, L, inner)` (latentsync.kernels.short_attention); None = SDPA.
        self.short_attention = None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, inner = x.shape
        return x.view(n, length, self.heads, inner // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, L, query_dim), context (N, S, context_dim) or None -> (N, L, query_dim)."""
        n, length, _ = x.shape
        if context is None:
            qkv_weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
            qkv = F.linear(x, qkv_weight)
            if self.short_attention is not None:
                return self.to_out[0](self.short_attention(qkv, self.heads))
            q, k, v = qkv.chunk(3, dim=-1)
            if self.pack_sequences > 1 and n % self.pack_sequences == 0:
                if self.packed_backends is None:
                    out = packed_self_attention(q, k, v, self.heads, self.pack_sequences)
                else:
                    with sdpa_kernel(self.packed_backends):
                        out = packed_self_attention(q, k, v, self.heads, self.pack_sequences)
                return self.to_out[0](out)
        else:
            q = self.to_q(x)
            kv_weight = torch.cat([self.to_k.weight, self.to_v.weight])
            k, v = F.linear(context, kv_weight).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(self._split_heads(q), self._split_heads(k), self._split_heads(v))
        out = out.transpose(1, 2).reshape(n, length, -1)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """Linear to 2x width, then value * gelu(gate) (exact GELU). Key `proj`.

    The two halves are computed as two matmuls on row slices of `proj.weight` so each
    comes out contiguous: the GELU and the product then run as vectorised kernels (a
    `chunk` of one matmul would hand them strided halves), and the product is in place.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)
        self.dim_out = dim_out
        # A kernel computing the whole projection and gating in one pass
        # (latentsync.kernels.geglu_linear); None = the two matmuls below.
        self.fused = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias, n = self.proj.weight, self.proj.bias, self.dim_out
        if self.fused is not None:
            return self.fused(x, weight, bias)
        gate = F.gelu(F.linear(x, weight[n:], bias[n:]))
        return F.linear(x, weight[:n], bias[:n]).mul_(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, width 4x. Keys `net.0.proj`, `net.2` as in diffusers."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner_dim), nn.Dropout(0.0), nn.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to audio tokens, GEGLU feed-forward (pre-LayerNorm)."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int | None, add_audio_layer: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        if add_audio_layer:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, dim_head, context_dim=cross_attention_dim)
        else:
            self.attn2 = None
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: "torch.Tensor | SilentAudio | None", fork: bool = False) -> torch.Tensor:
        """`fork`: x holds one copy of rows that CFG's two halves share (see the UNet's
        `cfg_shared_prefix`); the block returns both halves, unconditional rows first,
        from its audio cross-attention on."""
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and isinstance(audio, SilentAudio):
            silent, heard = (x, x) if fork else (x[: audio.silent_rows], x[audio.silent_rows:])
            x = torch.cat([silent + self.attn2.to_out[0].bias, self.attn2(self.norm2(heard), audio.tokens) + heard])
        else:
            if fork:
                x = torch.cat([x, x])
            if self.attn2 is not None and audio is not None:
                x = self.attn2(self.norm2(x), audio) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Per-frame spatial transformer: GroupNorm, 1x1 conv in, transformer block(s), 1x1 conv out, residual.

    The 1x1 convolutions (checkpoint shape `(C, C, 1, 1)`) run as linear layers on the
    token layout. Audio tokens `(B*F, S, D)` are attended per frame.
    """

    def __init__(
        self,
        heads: int,
        dim_head: int,
        in_channels: int,
        norm_num_groups: int,
        cross_attention_dim: int | None,
        add_audio_layer: bool,
        num_layers: int = 1,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(inner_dim, heads, dim_head, cross_attention_dim, add_audio_layer)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: "torch.Tensor | SilentAudio | None", fork: bool = False) -> torch.Tensor:
        """`fork`: x holds the rows CFG's halves share; returns twice as many rows (see
        `BasicTransformerBlock`), the residual added to both halves by broadcasting."""
        _, _, height, width = x.shape
        tokens = image_to_tokens(self.norm(x))
        tokens = F.linear(tokens, self.proj_in.weight.flatten(1), self.proj_in.bias)
        for index, block in enumerate(self.transformer_blocks):
            tokens = block(tokens, audio, fork=fork and index == 0)
        tokens = F.linear(tokens, self.proj_out.weight.flatten(1), self.proj_out.bias)
        out = tokens_to_image(tokens, height, width)
        if fork:
            return (out.unflatten(0, (2, -1)) + x).flatten(0, 1)
        return out + x


# --------------------------------------------------------------------------- resnet and resampling


class ResnetBlock3D(nn.Module):
    """Pre-norm ResNet block on per-frame 3x3 convs; GroupNorm statistics span frames."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
        norm_spans_frames: bool = True,
    ):
        super().__init__()
        norm_cls = FrameSpanningGroupNorm if norm_spans_frames else PerFrameGroupNorm
        self.output_scale_factor = float(output_scale_factor)
        self.norm1 = norm_cls(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = norm_cls(groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (B*F, C_in, h, w); temb_act = silu(time embedding), (B, temb_channels)."""
        h = F.silu(self.norm1(x, num_frames), inplace=True)
        h = self.conv1(h)
        h = add_per_batch(h, self.time_emb_proj(temb_act), num_frames)
        h = F.silu(self.norm2(h, num_frames), inplace=True)
        h = self.conv2(h)
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = shortcut + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample3D(nn.Module):
    """Per-frame 3x3 conv with stride 2."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Per-frame nearest-neighbour 2x upsampling (to the size of the matching skip), then 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


# --------------------------------------------------------------------------- blocks


def _spatial_transformers(channels: int, count: int, heads: int, groups: int, cross_attention_dim: int,
                          add_audio_layer: bool) -> nn.ModuleList:
    return nn.ModuleList(
        [Transformer3DModel(heads, channels // heads, channels, groups, cross_attention_dim, add_audio_layer)
         for _ in range(count)]
    )


def _motion_modules(channels: int, count: int, use: bool, kwargs: dict | None) -> nn.ModuleList:
    if not use:
        return nn.ModuleList()
    from .motion_module import VanillaTemporalModule  # motion_module imports Attention from here

    return nn.ModuleList([VanillaTemporalModule(channels, **(kwargs or {})) for _ in range(count)])


class DownBlock3D(nn.Module):
    """`num_layers` x (resnet [-> spatial transformer] [-> motion module]) [-> downsampler].

    Each layer and the downsampler is a *unit* that emits one skip feature for the up path.
    `forward(..., num_units=n)` runs only the first n units (DeepCache's shallow branch).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        resnet_groups: int,
        resnet_eps: float,
        add_downsample: bool,
        downsample_padding: int,
        norm_spans_frames: bool,
        use_motion_module: bool,
        motion_module_kwargs: dict | None,
        with_attention: bool = False,
        attention_heads: int = 8,
        cross_attention_dim: int | None = None,
        add_audio_layer: bool = False,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    temb_channels,
                    resnet_groups,
                    resnet_eps,
                    norm_spans_frames=norm_spans_frames,
                )
                for i in range(num_layers)
            ]
        )
        self.attentions = (
            _spatial_transformers(out_channels, num_layers, attention_heads, resnet_groups, cross_attention_dim,
                                  add_audio_layer)
            if with_attention
            else None
        )
        self.motion_modules = _motion_modules(out_channels, num_layers, use_motion_module, motion_module_kwargs)
        self.downsamplers = (
            nn.ModuleList([Downsample3D(out_channels, padding=downsample_padding)]) if add_downsample else None
        )

    @property
    def num_units(self) -> int:
        return len(self.resnets) + (1 if self.downsamplers is not None else 0)

    def forward(
        self,
        x: torch.Tensor,
        temb_act: torch.Tensor,
        audio: torch.Tensor | None,
        num_frames: int,
        num_units: int | None = None,
        fork: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`fork`: x holds the rows CFG's halves share (the UNet's `cfg_shared_prefix`); the
        first layer runs on them once and doubles them where the audio first matters."""
        num_units = self.num_units if num_units is None else num_units
        skips: list[torch.Tensor] = []
        for i, resnet in enumerate(self.resnets):
            if i >= num_units:
                return x, skips
            forks_here = fork and i == 0
            # Before the fork only the conditional half's time embedding is needed (both are equal).
            x = resnet(x, temb_act[temb_act.shape[0] // 2:] if forks_here else temb_act, num_frames)
            if self.attentions is not None:
                x = self.attentions[i](x, audio, fork=forks_here)
            elif forks_here:
                x = torch.cat([x, x])
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
            skips.append(x)
        if self.downsamplers is not None and num_units > len(self.resnets):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class CrossAttnDownBlock3D(DownBlock3D):
    def __init__(self, **kwargs):
        super().__init__(with_attention=True, **kwargs)


class UpBlock3D(nn.Module):
    """`num_layers` x (concat skip -> resnet [-> spatial transformer] [-> motion module]) [-> upsampler].

    `forward(..., start=a, stop=b)` runs layers a..b-1 only; the upsampler runs when b is the
    last layer. DeepCache uses this to start the shallow branch mid-block.
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        resnet_groups: int,
        resnet_eps: float,
        add_upsample: bool,
        norm_spans_frames: bool,
        use_motion_module: bool,
        motion_module_kwargs: dict | None,
        with_attention: bool = False,
        attention_heads: int = 8,
        cross_attention_dim: int | None = None,
        add_audio_layer: bool = False,
    ):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            resnets.append(
                ResnetBlock3D(
                    resnet_in + skip_channels,
                    out_channels,
                    temb_channels,
                    resnet_groups,
                    resnet_eps,
                    norm_spans_frames=norm_spans_frames,
                )
            )
        self.resnets = nn.ModuleList(resnets)
        self.attentions = (
            _spatial_transformers(out_channels, num_layers, attention_heads, resnet_groups, cross_attention_dim,
                                  add_audio_layer)
            if with_attention
            else None
        )
        self.motion_modules = _motion_modules(out_channels, num_layers, use_motion_module, motion_module_kwargs)
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: Sequence[torch.Tensor],
        temb_act: torch.Tensor,
        audio: torch.Tensor | None,
        num_frames: int,
        upsample_size: Sequence[int] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """`skips[j]` is the skip feature for layer `start + j` (consumption order)."""
        stop = len(self.resnets) if stop is None else stop
        for j, i in enumerate(range(start, stop)):
            x = torch.cat([x, skips[j]], dim=1)
            x = self.resnets[i](x, temb_act, num_frames)
            if self.attentions is not None:
                x = self.attentions[i](x, audio)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
        if self.upsamplers is not None and stop == len(self.resnets):
            if upsample_size is None:
                upsample_size = (x.shape[-2] * 2, x.shape[-1] * 2)
            x = self.upsamplers[0](x, upsample_size)
        return x


class CrossAttnUpBlock3D(UpBlock3D):
    def __init__(self, **kwargs):
        super().__init__(with_attention=True, **kwargs)


class UNetMidBlock3DCrossAttn(nn.Module):
    """resnet -> (spatial transformer [-> motion module] -> resnet) x num_layers."""

    def __init__(
        self,
        in_channels: int,
        temb_channels: int,
        resnet_groups: int,
        resnet_eps: float,
        output_scale_factor: float,
        attention_heads: int,
        cross_attention_dim: int | None,
        add_audio_layer: bool,
        norm_spans_frames: bool,
        use_motion_module: bool,
        motion_module_kwargs: dict | None,
        num_layers: int = 1,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(
                    in_channels,
                    in_channels,
                    temb_channels,
                    resnet_groups,
                    resnet_eps,
                    output_scale_factor=output_scale_factor,
                    norm_spans_frames=norm_spans_frames,
                )
                for _ in range(num_layers + 1)
            ]
        )
        self.attentions = nn.ModuleList(
            [
                Transformer3DModel(
                    attention_heads,
                    in_channels // attention_heads,
                    in_channels,
                    resnet_groups,
                    cross_attention_dim,
                    add_audio_layer,
                )
                for _ in range(num_layers)
            ]
        )
        self.motion_modules = _motion_modules(in_channels, num_layers, use_motion_module, motion_module_kwargs)

    def forward(
        self, x: torch.Tensor, temb_act: torch.Tensor, audio: torch.Tensor | None, num_frames: int
    ) -> torch.Tensor:
        x = self.resnets[0](x, temb_act, num_frames)
        for i, attention in enumerate(self.attentions):
            x = attention(x, audio)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
            x = self.resnets[i + 1](x, temb_act, num_frames)
        return x
