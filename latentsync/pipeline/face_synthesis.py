"""Aligned face crops + audio windows in, lip-synced face crops out.

This is the GPU part of the pipeline for a batch of chunks: VAE encode of the
masked and reference faces, the denoising loop, VAE decode, and compositing the
repainted lower face over the reference. Face detection, warping and video I/O
live elsewhere; this stage sees only (frames, res, res, 3) uint8 crops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .denoise import DenoiseInputs, DenoiseSettings, DenoiseStats, denoise
from .vae import VaeOptions, decode_latents, encode_images


@dataclass
class FaceChunk:
    """One temporal chunk: `crops` (n, res, res, 3) uint8 and `audio` (n, 50, 384)."""

    crops: np.ndarray
    audio: torch.Tensor

    @property
    def frames(self) -> int:
        return int(self.crops.shape[0])


@dataclass
class SynthesisStats:
    denoise: DenoiseStats = field(default_factory=DenoiseStats)
    padded_frames: int = 0
    vae_encode_images: int = 0
    vae_decode_images: int = 0
    vae_decoded_latent_rows: int = 0


def pad_frames(array, target: int):
    """Pad a chunk's frame axis (axis 0) to `target` by mirroring its tail.

    A compiled UNet is specialised to 16-frame chunks; mirroring keeps the padded
    frames plausible for the temporal layers. The padded outputs are dropped.
    """
    n = array.shape[0]
    if n >= target:
        return array
    if n == 0:
        raise ValueError("cannot pad an empty chunk")
    order = []
    index, step = n - 1, -1
    while len(order) < target - n:
        if n == 1:
            order.append(0)
            continue
        index += step
        if index < 0 or index >= n:
            step = -step
            index += 2 * step
        order.append(index)
    if isinstance(array, np.ndarray):
        return np.concatenate([array, array[order]], axis=0)
    return torch.cat([array, array[torch.as_tensor(order, device=array.device)]], dim=0)


# Latent rows decoded above the first repainted row with `vae_decode_region: mask`: the
# decoder's convolutions see 3 latent rows each way per resolution level, so 4 rows (32 px)
# keep the repainted region's context; everything above is replaced by the reference.
DECODE_MARGIN_LATENT_ROWS = 4


def decode_start_row(mask: np.ndarray, latent_rows: int) -> int:
    """First latent row to decode so the repainted region (mask < 0.5) and a margin are covered."""
    repaint_rows = np.flatnonzero((mask < 0.5).any(axis=1))
    if repaint_rows.size == 0:
        return 0
    scale = mask.shape[0] // latent_rows
    return max(0, int(repaint_rows[0]) // scale - DECODE_MARGIN_LATENT_ROWS)


def crops_to_pixels(crops: np.ndarray, device, dtype) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) in [-1, 1]."""
    pixels = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    pixels = pixels.permute(0, 3, 1, 2).to(dtype)
    return pixels / 127.5 - 1.0


def pixels_to_crops(pixels: torch.Tensor) -> np.ndarray:
    images = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


REFERENCE_FRAMES = ("per_frame", "per_chunk")


def reference_frame_index(real_frames: int, frames: int) -> int:
    """The frame of a chunk whose face is every frame's reference with `reference_frames: per_chunk`:
    the middle of the chunk's real (unpadded) frames, the nearest in time to all of them."""
    return min(real_frames, frames) // 2


class FaceSynthesizer:
    """Runs batches of chunks through VAE + UNet with one run plan's settings.

    `mask` is the (res, res) keep-mask (1 keep, 0 repaint). `noise` is the one
    initial noise tensor (4, h, w) shared by every frame of the clip, as upstream.
    `reference_frames`: "per_frame" (upstream: each frame's own face is its reference
    image, so the VAE encodes every face twice, masked and whole) or "per_chunk" (one
    face per chunk is every frame's reference, so the VAE encodes one reference per
    chunk; LatentSync is trained with reference frames drawn from elsewhere in the same
    video, so any frame of the speaker is a valid reference).
    """

    def __init__(
        self,
        unet,
        vae,
        mask: np.ndarray,
        *,
        chunk_frames: int,
        denoise_settings: DenoiseSettings,
        vae_options: VaeOptions,
        device,
        dtype,
        noise: torch.Tensor,
        pad_partial_chunks: bool,
        batch_chunks: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        reference_frames: str = "per_frame",
    ):
        if reference_frames not in REFERENCE_FRAMES:
            raise ValueError(f"reference_frames must be one of {list(REFERENCE_FRAMES)}, got {reference_frames!r}")
        self.reference_frames = reference_frames
        self.unet = unet
        self.vae = vae
        self.chunk_frames = int(chunk_frames)
        self.settings = denoise_settings
        self.vae_options = vae_options
        self.device = torch.device(device)
        self.dtype = dtype
        self.noise = noise.to(self.device, dtype)
        self.pad_partial_chunks = pad_partial_chunks
        # With padding on, a short last batch is topped up to `batch_chunks` chunks (copies
        # of its last chunk, outputs dropped): a compiled UNet then never sees a new batch
        # size, which would cost a fresh compile (about 100 s for the full model).
        self.batch_chunks = batch_chunks
        self.generator = generator
        self.mask_pixels = torch.tensor(np.asarray(mask), dtype=dtype, device=self.device)[None, None]  # (1,1,H,W)
        h, w = self.noise.shape[-2:]
        # Upstream resizes the mask to the latent grid with nearest-neighbour interpolation.
        self.mask_latent = F.interpolate(self.mask_pixels.float(), size=(h, w), mode="nearest").to(dtype)
        self.decode_row = decode_start_row(np.asarray(mask), h) if vae_options.decode_region == "mask" else 0
        self.stats = SynthesisStats()

    def reset_stats(self) -> None:
        """Start counting afresh (a resident pipeline reports each clip's own counts)."""
        self.stats = SynthesisStats()

    def _stack(self, tensors: Sequence[torch.Tensor], frames: int) -> torch.Tensor:
        """[(f, C, h, w)] per chunk -> (k, C, f, h, w)."""
        return torch.stack([t.reshape(frames, *t.shape[1:]) for t in tensors]).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def run(self, chunks: Sequence[FaceChunk], on_step: Optional[Callable[[int, int], None]] = None) -> list[np.ndarray]:
        """Synthesize a batch of chunks; returns one (n_i, res, res, 3) uint8 array per chunk."""
        n_real = len(chunks)
        if self.pad_partial_chunks and self.batch_chunks and n_real < self.batch_chunks:
            last = chunks[-1]
            chunks = list(chunks) + [last] * (self.batch_chunks - n_real)
            self.stats.padded_frames += last.frames * (self.batch_chunks - n_real)
        lengths = [chunk.frames for chunk in chunks]
        frames = max(lengths)
        if self.pad_partial_chunks:
            frames = self.chunk_frames
        if len(set(lengths)) > 1 or frames != lengths[0]:
            padded = [(pad_frames(c.crops, frames), pad_frames(c.audio, frames)) for c in chunks]
            self.stats.padded_frames += sum(frames - n for n in lengths)
        else:
            padded = [(c.crops, c.audio) for c in chunks]
        k = len(chunks)
        pixels = torch.cat([crops_to_pixels(crops, self.device, self.dtype) for crops, _ in padded])
        masked = pixels * self.mask_pixels
        if self.reference_frames == "per_chunk":
            picks = [i * frames + reference_frame_index(n, frames) for i, n in enumerate(lengths)]
            encoded = encode_images(self.vae, torch.cat([masked, pixels[picks]]), self.vae_options, self.generator)
            masked_latents, chunk_refs = encoded[: k * frames], encoded[k * frames :]
            ref_latents = chunk_refs.repeat_interleave(frames, dim=0)  # (k*frames, 4, h, w)
        else:
            encoded = encode_images(self.vae, torch.cat([masked, pixels]), self.vae_options, self.generator)
            masked_latents, ref_latents = encoded.chunk(2)
        self.stats.vae_encode_images += encoded.shape[0]
        h, w = masked_latents.shape[-2:]
        audio = torch.cat([a.to(self.device, self.dtype) for _, a in padded])
        inputs = DenoiseInputs(
            noise=self.noise[None, :, None].expand(k, -1, frames, -1, -1).contiguous(),
            mask=self.mask_latent[:, :, None].expand(k, 1, frames, h, w).contiguous(),
            masked_latents=self._stack(masked_latents.split(frames), frames),
            ref_latents=self._stack(ref_latents.split(frames), frames),
            audio=audio,
        )
        latents = denoise(self.unet, inputs, self.settings, stats=self.stats.denoise, on_step=on_step)
        flat = latents.permute(0, 2, 1, 3, 4).reshape(k * frames, *latents.shape[1:2], h, w)
        if self.decode_row:
            # Rows above the repainted region come from the reference anyway (mask = 1):
            # decode only the latent rows below `decode_row` and keep the reference above.
            scale = pixels.shape[-2] // h
            decoded = pixels.clone()
            decoded[:, :, self.decode_row * scale :] = decode_latents(
                self.vae, flat[:, :, self.decode_row :].contiguous(), self.vae_options
            ).to(self.dtype)
        else:
            decoded = decode_latents(self.vae, flat, self.vae_options).to(self.dtype)
        self.stats.vae_decode_images += decoded.shape[0]
        self.stats.vae_decoded_latent_rows = h - self.decode_row
        # The repainted region comes from the model, the rest from the reference.
        composed = decoded * (1 - self.mask_pixels) + pixels * self.mask_pixels
        crops = pixels_to_crops(composed)
        return [crops[i * frames : i * frames + n] for i, n in enumerate(lengths[:n_real])]
