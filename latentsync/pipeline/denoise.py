"""The denoising loop for a batch of 16-frame chunks.

Everything the run plan says about diffusion happens here: the scheduler and
its step count, classifier-free guidance (scale, and on which steps it runs),
and DeepCache (which steps reuse the deep features). The UNet is called with
static shapes: the batch is `k` chunks (times two while CFG runs).

Tensor layout follows upstream: (batch, channels, frames, h, w). With CFG the
UNet batch is [zero audio ... , real audio ...]; eps = uncond + s * (cond - uncond).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .schedulers import new_scheduler


@dataclass
class DenoiseSettings:
    steps: int = 20
    scheduler: str = "ddim"
    guidance_scale: float = 1.5
    cfg_mode: str = "all"  # off | all | first_fraction
    cfg_fraction: float = 1.0
    deepcache: bool = False
    deepcache_interval: int = 3
    deepcache_branch: int = 0
    # The UNet replays CUDA graphs (compile with cuda_graphs): each call starts a new
    # graph step, and features kept across steps (DeepCache) are copied out of the
    # graph's memory pool before the next replay overwrites them.
    cuda_graphs: bool = False
    # CFG steps: the unconditional half's audio is all zeros, so its audio cross-attentions
    # add their output bias instead of attending (uncond_audio_attention: bias; same result).
    uncond_audio_bias: bool = False
    # CFG steps: the halves share their input, so the UNet runs everything before the first
    # audio cross-attention once (cfg_shared_prefix; same result).
    cfg_shared_prefix: bool = False

    @classmethod
    def from_settings(cls, settings) -> "DenoiseSettings":
        """From a RunSettings (typed and complete: no defaults here)."""
        return cls(
            steps=settings.steps,
            scheduler=settings.scheduler,
            guidance_scale=settings.guidance_scale,
            cfg_mode=settings.cfg_mode,
            cfg_fraction=settings.cfg_fraction,
            deepcache=settings.deepcache,
            deepcache_interval=settings.deepcache_interval,
            deepcache_branch=settings.deepcache_branch,
            cuda_graphs=settings.cuda_graphs and settings.compiles,
            uncond_audio_bias=settings.uncond_audio_attention == "bias",
            cfg_shared_prefix=settings.cfg_shared_prefix,
        )

    def cfg_steps(self) -> int:
        """How many of the first steps run with classifier-free guidance."""
        if self.guidance_scale <= 1.0 or self.cfg_mode == "off":
            return 0
        if self.cfg_mode == "all":
            return self.steps
        return min(self.steps, math.ceil(self.cfg_fraction * self.steps))

    def is_full_step(self, step_index: int) -> bool:
        """DeepCache: every `interval`-th step (and the first of each chunk) runs the whole UNet."""
        if not self.deepcache or self.deepcache_interval <= 1:
            return True
        return step_index % self.deepcache_interval == 0


@dataclass
class DenoiseInputs:
    """Conditioning for k chunks of F frames (latent grid h x w)."""

    noise: torch.Tensor  # (k, 4, F, h, w), already the shared initial noise
    mask: torch.Tensor  # (k, 1, F, h, w): 1 keep, 0 repaint
    masked_latents: torch.Tensor  # (k, 4, F, h, w)
    ref_latents: torch.Tensor  # (k, 4, F, h, w)
    audio: torch.Tensor  # (k * F, 50, 384), chunk-major


@dataclass
class DenoiseStats:
    unet_calls: int = 0
    full_calls: int = 0
    cached_calls: int = 0
    cfg_calls: int = 0
    first_sample_shape: tuple = ()  # (batch, 13, frames, h, w) of the first UNet call


UnetCall = Callable[..., object]


def _unet_forward(unet, sample, timestep, audio, *, branch, cached, want_cache, silent_audio_batch=0,
                  cfg_shared_prefix=False):
    """Call the UNet, with or without DeepCache features. Returns (eps, deep_features)."""
    extra = {"silent_audio_batch": silent_audio_batch} if silent_audio_batch else {}
    if cfg_shared_prefix:
        extra["cfg_shared_prefix"] = True
    if branch is None:
        out = unet(sample, timestep, encoder_hidden_states=audio, **extra)
        return out.sample, None
    out = unet(
        sample,
        timestep,
        encoder_hidden_states=audio,
        deepcache_branch=branch,
        cached_features=cached,
        return_deep_features=want_cache,
        **extra,
    )
    return out.sample, getattr(out, "deep_features", None)


def _cond_half(features, k: int):
    """Keep the real-audio half of cached features when CFG switches off mid-chunk."""
    if features is None:
        return None
    if isinstance(features, (list, tuple)):
        return type(features)(_cond_half(f, k) for f in features)
    return features[k:] if features.shape[0] == 2 * k else features


def _copy_features(features):
    if features is None:
        return None
    if isinstance(features, (list, tuple)):
        return type(features)(_copy_features(f) for f in features)
    return features.clone()


@torch.no_grad()
def denoise(
    unet,
    inputs: DenoiseInputs,
    settings: DenoiseSettings,
    *,
    stats: Optional[DenoiseStats] = None,
    on_step: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """Run the reverse diffusion for one batch of chunks; returns latents (k, 4, F, h, w)."""
    k = inputs.noise.shape[0]
    device = inputs.noise.device
    scheduler = new_scheduler(settings.scheduler, settings.steps, device=device)
    latents = inputs.noise * scheduler.init_noise_sigma
    cfg_steps = settings.cfg_steps()
    zero_audio = torch.zeros_like(inputs.audio) if cfg_steps else None
    cond_with_cfg = None
    if cfg_steps:
        cond_with_cfg = (
            torch.cat([inputs.mask] * 2),
            torch.cat([inputs.masked_latents] * 2),
            torch.cat([inputs.ref_latents] * 2),
            torch.cat([zero_audio, inputs.audio]),
        )
    cond_plain = (inputs.mask, inputs.masked_latents, inputs.ref_latents, inputs.audio)
    branch = settings.deepcache_branch if settings.deepcache and settings.deepcache_interval > 1 else None
    cached = None
    cached_batch = None
    timesteps = scheduler.timesteps
    for step_index, t in enumerate(timesteps):
        use_cfg = step_index < cfg_steps
        mask, masked, ref, audio = cond_with_cfg if use_cfg else cond_plain
        model_latents = torch.cat([latents] * 2) if use_cfg else latents
        model_latents = scheduler.scale_model_input(model_latents, t)
        sample = torch.cat([model_latents, mask, masked, ref], dim=1)
        batch = sample.shape[0]
        full = settings.is_full_step(step_index) or cached is None
        if not full and cached_batch != batch:
            if cached_batch == 2 * k and batch == k:
                cached, cached_batch = _cond_half(cached, k), k
            else:
                full = True
        if settings.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        cfg_kwargs = {
            "silent_audio_batch": k if use_cfg and settings.uncond_audio_bias else 0,  # zero audio: first k items
            "cfg_shared_prefix": use_cfg and settings.cfg_shared_prefix,
        }
        if branch is None:
            eps, _ = _unet_forward(unet, sample, t, audio, branch=None, cached=None, want_cache=False, **cfg_kwargs)
        elif full:
            eps, cached = _unet_forward(unet, sample, t, audio, branch=branch, cached=None, want_cache=True,
                                        **cfg_kwargs)
            if settings.cuda_graphs:
                cached = _copy_features(cached)
            cached_batch = batch
        else:
            eps, _ = _unet_forward(unet, sample, t, audio, branch=branch, cached=cached, want_cache=False,
                                   **cfg_kwargs)
        if stats is not None:
            stats.unet_calls += 1
            stats.full_calls += int(full or branch is None)
            stats.cached_calls += int(not (full or branch is None))
            stats.cfg_calls += int(use_cfg)
            stats.first_sample_shape = stats.first_sample_shape or tuple(sample.shape)
        if use_cfg:
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + settings.guidance_scale * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
        if on_step is not None:
            on_step(step_index + 1, len(timesteps))
    return latents
