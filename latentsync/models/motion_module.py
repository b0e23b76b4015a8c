"""Temporal motion module (AnimateDiff "Vanilla" type, as LatentSync 1.5/1.6 use it).

Each module: per-frame GroupNorm (32 groups, eps 1e-6, whatever the UNet's group
count), a linear in, transformer block(s) of temporal self-attentions (sinusoidal
position encoding added to the normed input of each attention) and a GEGLU
feed-forward, a linear out (zero-initialised upstream), and a residual.

Attention runs across the F frames of each pixel. The tokens are laid out once as
`(B*h*w, F, C)` for the whole module (every other op is per token), so entering and
leaving the module costs one transpose each instead of one per attention.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .unet_blocks import Attention, FeedForward


def sinusoidal_position_encoding(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim): sin on even channels, cos on odd, frequencies 10000^(-2i/dim)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class TemporalAttention(Attention):
    """Self-attention across frames with a position encoding added to its input.

    Keys: to_q/to_k/to_v (no bias), to_out.0, pos_encoder.pe.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, position_encoding_max_len: int | None):
        super().__init__(dim, heads, dim_head)
        self.pos_encoder = (
            PositionalEncoding(dim, position_encoding_max_len) if position_encoding_max_len else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """x (N, F, C) -> (N, F, C)."""
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        return super().forward(x)


class PositionalEncoding(nn.Module):
    """Adds a fixed sinusoidal table; stored as the persistent buffer `pe` (checkpoints hold it)."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("pe", sinusoidal_position_encoding(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_frames = x.shape[1]
        if num_frames > self.max_len:
            raise ValueError(f"motion module position encoding covers {self.max_len} frames, got {num_frames}")
        return x + self.pe[:, :num_frames].to(x.dtype)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, num_attentions: int, position_encoding_max_len):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, dim_head, position_encoding_max_len) for _ in range(num_attentions)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attentions)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    def __init__(
        self,
        in_channels: int,
        heads: int,
        dim_head: int,
        num_layers: int,
        num_attentions: int,
        position_encoding_max_len: int | None,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(inner_dim, heads, dim_head, num_attentions, position_encoding_max_len)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(inner_dim, in_channels)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (B*F, C, h, w) -> same shape."""
        bf, channels, height, width = x.shape
        batch = bf // num_frames
        normed = self.norm(x)
        # (B, F, C, h, w) -> (B, h, w, F, C) -> (B*h*w, F, C): one copy in.
        tokens = normed.view(batch, num_frames, channels, height, width).permute(0, 3, 4, 1, 2)
        tokens = tokens.reshape(batch * height * width, num_frames, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        # Back to (B, F, C, h, w) as a strided view; the residual add (x first, so the result
        # takes x's layout) does the copy out.
        out = tokens.view(batch, height, width, num_frames, channels).permute(0, 3, 4, 1, 2)
        return (x.unflatten(0, (batch, num_frames)) + out).flatten(0, 1)


class VanillaTemporalModule(nn.Module):
    """Upstream config keys: num_attention_heads, num_transformer_block, attention_block_types,
    temporal_position_encoding, temporal_position_encoding_max_len, temporal_attention_dim_div,
    zero_initialize (and cross_frame_attention_mode, which must be None)."""

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 2,
        attention_block_types=("Temporal_Self", "Temporal_Self"),
        cross_frame_attention_mode=None,
        temporal_position_encoding: bool = False,
        temporal_position_encoding_max_len: int = 24,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
    ):
        super().__init__()
        if any(kind != "Temporal_Self" for kind in attention_block_types):
            raise ValueError(f"only Temporal_Self motion attention is supported, got {list(attention_block_types)}")
        if cross_frame_attention_mode is not None:
            raise ValueError("cross_frame_attention_mode is not supported")
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels,
            heads=num_attention_heads,
            dim_head=in_channels // num_attention_heads // temporal_attention_dim_div,
            num_layers=num_transformer_block,
            num_attentions=len(attention_block_types),
            position_encoding_max_len=temporal_position_encoding_max_len if temporal_position_encoding else None,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, num_frames)
