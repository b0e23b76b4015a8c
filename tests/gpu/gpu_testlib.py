"""Helpers for the CUDA tests (imported by name: pytest puts tests/gpu on sys.path)."""
import torch

from latentsync.models.unet3d import UNet3DConditionModel, builtin_unet_config, randomize_zero_initialized


def cuda_unet_and_inputs(config: str = "small", latent: int = 32):
    """A random UNet (`config`: 'small' or '1.6') in fp16 on the GPU, and a CFG-sized batch
    (2 x 16 frames of `latent` x `latent` latents) with audio tokens."""
    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_config(builtin_unet_config(config))
    randomize_zero_initialized(unet)
    unet = unet.to("cuda", torch.float16).eval().requires_grad_(False)
    g = torch.Generator(device="cuda").manual_seed(1)
    sample = torch.randn(2, 13, 16, latent, latent, device="cuda", dtype=torch.float16, generator=g)
    audio = torch.randn(32, 50, 384, device="cuda", dtype=torch.float16, generator=g)
    return unet, sample, audio
