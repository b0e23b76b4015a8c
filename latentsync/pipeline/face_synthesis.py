"""Aligned face crops + audio windows in, lip-synced face crops out.

This is the GPU part of the pipeline for a batch of chunks: VAE encode of the
masked and reference faces, the denoising loop, VAE decode, and compositing the
repainted lower face over the reference. Face detection, warping and video I/O
live elsewhere; this stage sees only (frames, res, res, 3) uint8 crops.

Chunks shorter than `chunk_frames` (the end of a clip) are denoised at their own
length in a UNet call of their own, as upstream runs them: the motion modules attend
across a chunk's frames and the ResNet GroupNorms take their statistics over all of
them, so padding a chunk with extra frames would change its real frames' output.
Padding is kept only where it cannot change a result: the VAE (every image on its
own) and copies of whole chunks added to a compiled UNet's batch (batch items are
independent). With a compiled UNet the short chunk runs eagerly, so no new graph is
compiled for it (`docs/faithfulness.md`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
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
    # frames added for static shapes (VAE inputs, copies topping up a compiled batch);
    # their outputs are dropped and no real frame's UNet call ever holds them
    padded_frames: int = 0
    # chunks shorter than chunk_frames that ran in a UNet call at their own length
    short_chunks: int = 0
    vae_encode_images: int = 0
    vae_decode_images: int = 0
    vae_decoded_latent_rows: int = 0


def pad_frames(array, target: int):
    """Pad a chunk's frame axis (axis 0) to `target` by mirroring its tail.

    Used where padding cannot change real frames: VAE inputs (each image on its own)
    and the latents decoded for static shapes. The padded outputs are dropped.
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


def crops_to_pixels(crops: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) in [-1, 1]: upstream's `normalize(image / 255.0)`
    in float32, then `dtype`."""
    pixels = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    pixels = (pixels.permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
    return pixels.to(dtype)


def pixels_to_crops(pixels: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) in [-1, 1] -> (n, H, W, 3) uint8, rounded (for looking at, not for pasting)."""
    images = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def float_faces_to_uint8(faces: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) float faces in [-1, 1] -> uint8 as upstream's `pixel_values_to_images`
    (`(x / 2 + 0.5).clamp(0, 1) * 255`, truncated); uint8 input is returned as it is."""
    if faces.dtype == np.uint8:
        return faces
    return (np.clip(faces.astype(np.float32) / 2 + 0.5, 0, 1) * 255).astype(np.uint8)


@contextlib.contextmanager
def plain_kernels(module):
    """A short chunk's UNet call without per-shape start-up costs, same math: torch's kernels
    for the motion-module attention and the GEGLU (the Triton kernels compile, and autotune,
    once per new sequence length or row count) and cuDNN's heuristics instead of timing every
    convolution algorithm for the new shapes (`cudnn_benchmark`). Measured on an H200 with the
    Triton kernels and cuDNN timing left on: the 20 calls of one 4-frame tail cost 5.5 s of
    GPU time in a 6.5 s clip, most of it these one-off costs. Blocks compiled in place
    (`compile_scope: blocks`) run eagerly too (`torch.compiler.set_stance`), as a wholly
    compiled UNet's short chunks run its eager module: no compile for a one-off shape.
    Everything is put back after."""
    from ..models.motion_module import TemporalAttention
    from ..models.unet_blocks import GEGLU

    modules = list(module.modules()) if hasattr(module, "modules") else []
    attention = [(m, m.short_attention) for m in modules if isinstance(m, TemporalAttention)]
    geglu = [(m, m.fused) for m in modules if isinstance(m, GEGLU)]
    benchmark = torch.backends.cudnn.benchmark
    try:
        for m, _ in attention:
            m.short_attention = None
        for m, _ in geglu:
            m.fused = None
        torch.backends.cudnn.benchmark = False
        # the stance is torch-global: only take it when this UNet has blocks compiled in place
        compiled_blocks = any(getattr(m, "_latentsync_compiled", None) for m in modules)
        with torch.compiler.set_stance("force_eager") if compiled_blocks else contextlib.nullcontext():
            yield
    finally:
        for m, op in attention:
            m.short_attention = op
        for m, op in geglu:
            m.fused = op
        torch.backends.cudnn.benchmark = benchmark


REFERENCE_FRAMES = ("per_frame", "per_chunk")


def reference_frame_index(real_frames: int, frames: int) -> int:
    """The frame of a chunk whose face is every frame's reference with `reference_frames: per_chunk`:
    the middle of the chunk's real (unpadded) frames, the nearest in time to all of them."""
    return min(real_frames, frames) // 2


class FaceSynthesizer:
    """Runs batches of chunks through VAE + UNet with one run plan's settings.

    `mask` is the (res, res) keep-mask (1 keep, 0 repaint; soft values allowed, as
    upstream's Lanczos-resized picture has). `noise` is the one initial noise tensor
    (4, h, w) shared by every frame of the clip, as upstream.
    `reference_frames`: "per_frame" (upstream: each frame's own face is its reference
    image, so the VAE encodes every face twice, masked and whole) or "per_chunk" (one
    face per chunk is every frame's reference, so the VAE encodes one reference per
    chunk; LatentSync is trained with reference frames drawn from elsewhere in the same
    video, so any frame of the speaker is a valid reference).
    `float_faces`: return the composed faces as float in [-1, 1] (what upstream pastes
    back: no clamp, no uint8 step; float16 when the model runs in float16, else float32)
    instead of rounded uint8 crops. `float_size` (h, w): with `float_faces`, resize them on
    the model's device to this size first, as upstream's `restore_video` does (bicubic with
    antialias, computed in float32, then back to their dtype): the paste-back's crop size.
    `short_chunk_unet`: the module that runs chunks shorter than `chunk_frames`; default
    the eager module behind a compiled `unet` (its `_orig_mod`), else `unet` itself.
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
        float_faces: bool = False,
        float_size: Optional[tuple[int, int]] = None,
        short_chunk_unet=None,
    ):
        if reference_frames not in REFERENCE_FRAMES:
            raise ValueError(f"reference_frames must be one of {list(REFERENCE_FRAMES)}, got {reference_frames!r}")
        self.reference_frames = reference_frames
        self.unet = unet
        self.short_chunk_unet = short_chunk_unet if short_chunk_unet is not None else getattr(unet, "_orig_mod", unet)
        self.vae = vae
        self.chunk_frames = int(chunk_frames)
        self.settings = denoise_settings
        # an eager call replays no CUDA graph
        self.short_chunk_settings = replace(denoise_settings, cuda_graphs=False)
        self.vae_options = vae_options
        self.device = torch.device(device)
        self.dtype = dtype
        self.float_faces = float_faces
        self.float_size = tuple(float_size) if float_size is not None else None
        self.noise = noise.to(self.device, dtype)
        # Static shapes for a compiled UNet: every batch has `batch_chunks` chunks of
        # `chunk_frames` frames for the VAE (short chunks mirrored, a short last batch topped
        # up with copies of its last chunk), and every compiled UNet call `batch_chunks`
        # whole chunks (copies of a whole chunk fill a short batch). A chunk shorter than
        # `chunk_frames` never shares a UNet call with other frames.
        self.pad_partial_chunks = pad_partial_chunks
        self.batch_chunks = batch_chunks
        self.generator = generator
        mask64 = torch.tensor(np.asarray(mask, dtype=np.float64), device=self.device)[None, None]  # (1,1,H,W)
        # upstream: masked = pixels (float32) * mask (float64 k/255), then the model's dtype;
        # composed = decoded * (1 - mask) + pixels * (1 - (1 - mask)), (1 - mask) in the model's dtype
        self.mask_pixels = mask64
        self.repaint_pixels = (1 - mask64).to(dtype)
        h, w = self.noise.shape[-2:]
        # Upstream resizes the mask to the latent grid with nearest-neighbour interpolation.
        self.mask_latent = F.interpolate(mask64, size=(h, w), mode="nearest").to(dtype)
        self.decode_row = decode_start_row(np.asarray(mask), h) if vae_options.decode_region == "mask" else 0
        self.stats = SynthesisStats()

    def reset_stats(self) -> None:
        """Start counting afresh (a resident pipeline reports each clip's own counts)."""
        self.stats = SynthesisStats()

    def _stack(self, tensors: Sequence[torch.Tensor], frames: int) -> torch.Tensor:
        """[(f, C, h, w)] per chunk -> (k, C, f, h, w)."""
        return torch.stack([t.reshape(frames, *t.shape[1:]) for t in tensors]).permute(0, 2, 1, 3, 4)

    def _unet_groups(self, real_lengths: list[int], frames: int) -> list[tuple[list[int], int, bool]]:
        """[(chunk indices, frames, short)] of the UNet calls a batch makes: whole chunks
        together (topped up with copies of one of them to `batch_chunks` when padding), then
        each shorter length on its own, at that length."""
        whole = [i for i, n in enumerate(real_lengths) if n == frames]
        groups: list[tuple[list[int], int, bool]] = []
        if whole:
            if self.pad_partial_chunks and self.batch_chunks and len(whole) < self.batch_chunks:
                whole = whole + [whole[-1]] * (self.batch_chunks - len(whole))
            groups.append((whole, frames, False))
        for length in sorted({n for n in real_lengths if n < frames}):
            groups.append(([i for i, n in enumerate(real_lengths) if n == length], length, True))
        return groups

    @torch.no_grad()
    def run(self, chunks: Sequence[FaceChunk], on_step: Optional[Callable[[int, int], None]] = None) -> list[np.ndarray]:
        """Synthesize a batch of chunks; returns one (n_i, res, res, 3) array per chunk
        (uint8, or float in [-1, 1] with `float_faces`)."""
        n_real = len(chunks)
        real_lengths = [chunk.frames for chunk in chunks]
        frames = self.chunk_frames if self.pad_partial_chunks else max(real_lengths)
        if self.pad_partial_chunks and self.batch_chunks and n_real < self.batch_chunks:
            chunks = list(chunks) + [chunks[-1]] * (self.batch_chunks - n_real)
        lengths = [chunk.frames for chunk in chunks]
        if any(n != frames for n in lengths):
            padded = [(pad_frames(c.crops, frames), pad_frames(c.audio, frames)) for c in chunks]
        else:
            padded = [(c.crops, c.audio) for c in chunks]
        self.stats.padded_frames += sum(frames - n for n in real_lengths) + frames * (len(chunks) - n_real)
        k = len(chunks)
        pixels32 = torch.cat([crops_to_pixels(crops, self.device) for crops, _ in padded])
        pixels = pixels32.to(self.dtype)
        masked = (pixels32 * self.mask_pixels).to(self.dtype)
        del pixels32
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
        masked_stack = self._stack(masked_latents.split(frames), frames)  # (k, 4, frames, h, w)
        ref_stack = self._stack(ref_latents.split(frames), frames)
        audio = torch.stack([a.to(self.device, self.dtype) for _, a in padded])  # (k, frames, 50, 384)

        latents = torch.zeros_like(masked_stack)
        for indices, length, short in self._unet_groups(real_lengths, frames):
            select = torch.as_tensor(indices, device=self.device)
            count = len(indices)
            inputs = DenoiseInputs(
                noise=self.noise[None, :, None].expand(count, -1, length, -1, -1).contiguous(),
                mask=self.mask_latent[:, :, None].expand(count, 1, length, h, w).contiguous(),
                masked_latents=masked_stack[select, :, :length].contiguous(),
                ref_latents=ref_stack[select, :, :length].contiguous(),
                audio=audio[select, :length].reshape(count * length, *audio.shape[2:]),
            )
            if short:
                self.stats.short_chunks += count
                with plain_kernels(self.short_chunk_unet):
                    out = denoise(self.short_chunk_unet, inputs, self.short_chunk_settings, stats=self.stats.denoise,
                                  on_step=on_step)
                # the frames past a short chunk's end are decoded only for static shapes
                out = pad_frames(out.transpose(0, 2), frames).transpose(0, 2)
            else:
                out = denoise(self.unet, inputs, self.settings, stats=self.stats.denoise, on_step=on_step)
            # copies topping up a batch repeat the last index at the end: keep the first of each
            unique = len(dict.fromkeys(indices))
            latents[select[:unique]] = out[:unique].to(latents.dtype)
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
        # upstream's paste_surrounding_pixels_back: the repainted region from the model,
        # the rest from the reference
        composed = decoded * self.repaint_pixels + pixels * (1 - self.repaint_pixels)
        if self.float_faces:
            as_float = torch.float16 if self.dtype == torch.float16 else torch.float32
            if self.float_size is not None and tuple(composed.shape[-2:]) != self.float_size:
                # torchvision's resize on a tensor: float32 in, the input's dtype out
                composed = F.interpolate(composed.float(), size=self.float_size, mode="bicubic", antialias=True,
                                         align_corners=False)
            faces = composed.to(as_float).permute(0, 2, 3, 1).cpu().numpy()
        else:
            faces = pixels_to_crops(composed)
        return [faces[i * frames : i * frames + n] for i, n in enumerate(real_lengths)]
